// Runs the bench-crypto wasm under Node's WASI (V8, the engine Envoy embeds).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { dirname, basename, resolve } from "node:path";

const [wasmPath, fixtures, filter = ""] = process.argv.slice(2);
const dir = dirname(resolve(fixtures));
const wasi = new WASI({ version: "preview1", args: ["bench-crypto", `/fx/${basename(fixtures)}`, filter], preopens: { "/fx": dir } });
const module = await WebAssembly.compile(await readFile(wasmPath));
// The proxy-wasm ABI imports (module "env") are linked in with the crate but never called here.
const env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === "env" && imp.kind === "function") {
    env[imp.name] = () => { throw new Error(`host call ${imp.name} in the crypto bench`); };
  }
}
const instance = await WebAssembly.instantiate(module, { ...wasi.getImportObject(), env });
// proxy-wasm also exports `_initialize`, which Node refuses next to `_start`: hand WASI the command.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
