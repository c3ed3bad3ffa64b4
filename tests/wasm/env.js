// The `env` import module for the unit tests run in Node by scripts/test-wasm (wasm-bindgen-test).
// The test .wasm links the proxy-wasm crate, whose exported proxy_on_* callbacks import the
// host's proxy_* functions from `env`. No unit test calls the host: any such call throws, and the
// test fails with the function's name.
module.exports = new Proxy({}, {
  get(_, name) {
    return () => {
      throw new Error(`proxy-wasm host function ${String(name)} called in a wasm unit test`);
    };
  },
});
