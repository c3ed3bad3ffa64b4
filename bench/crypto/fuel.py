"""Wasm instructions (wasmtime fuel) per JWT verification, per algorithm: a count, the same on
any machine, unlike V8 timings. Runs bench-crypto's `fuel:ALG COUNT` mode (verify the first
COUNT tokens once each) for COUNT = 0, 1 and N under wasmtime with fuel:
  per verification = (fuel(N) - fuel(1)) / (N - 1)
  first verification = fuel(1) - fuel(0)   (includes any per-key / per-process table build)
ALG sign-EdDSA / sign-ES256: the gateway's own token signing instead (`fuel:sign-ALG COUNT`).
Usage: bench/crypto/fuel.py WASM FIXTURES [ALG ...]   (bench/crypto/run builds both)"""
import json
import os
import sys

import wasmtime

FUEL = 1 << 62


def fuel_of(engine, module, fixtures, alg, count):
    store = wasmtime.Store(engine)
    store.set_fuel(FUEL)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["bench-crypto", f"/fx/{os.path.basename(fixtures)}", f"fuel:{alg}", str(count)]
    wasi.preopen_dir(os.path.dirname(os.path.abspath(fixtures)), "/fx")
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    store.set_wasi(wasi)
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    for imp in module.imports:
        if imp.module == "wasi_snapshot_preview1":
            continue

        def trap(*_args, _name=imp.name):
            raise RuntimeError(f"host call {_name} in the crypto bench")

        linker.define_func(imp.module, imp.name, imp.type, trap)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except wasmtime.ExitTrap as e:
        if e.code != 0:
            raise
    return FUEL - store.get_fuel()


def main():
    wasm, fixtures, *algs = sys.argv[1:]
    config = wasmtime.Config()
    config.consume_fuel = True
    engine = wasmtime.Engine(config)
    module = wasmtime.Module.from_file(engine, wasm)
    doc = json.load(open(fixtures))
    algs = algs or list(doc["tokens"])
    n = min(len(doc["tokens"][a.removeprefix("sign-")]) for a in algs)
    for alg in algs:
        f0, f1, fn = (fuel_of(engine, module, fixtures, alg, c) for c in (0, 1, n))
        per = (fn - f1) / (n - 1)
        what = "token signed" if alg.startswith("sign-") else "verification"
        print(f"{alg:<10} {per:>12,.0f} wasm instructions per {what}; first {what} "
              f"{f1 - f0:,} ({n} tokens)")


if __name__ == "__main__":
    main()
