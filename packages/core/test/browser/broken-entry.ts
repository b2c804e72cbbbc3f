// Bundled by the harness test: a module whose evaluation fails must fail openBrowser, not hang it.
throw new Error('entry exploded on purpose');
