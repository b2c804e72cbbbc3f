# The Ferry server (signaling + diff server) in one image. SQLite data lives in /data; set
# FERRY_DATABASE_URL / FERRY_REDIS_URL to run several instances on PostgreSQL and Redis.
FROM node:20-bookworm-slim AS build
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY . .
RUN npm ci && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
COPY --from=build /app /app
ENV NODE_ENV=production
VOLUME /data
EXPOSE 8787
USER node
CMD ["node", "packages/cli/dist/bin.js", "server", "--host", "0.0.0.0", "--port", "8787", "--data", "/data"]
