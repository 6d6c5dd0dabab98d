"""First-call cost of `infer`: tracing, XLA compilation and the compiled run, per sampler.

Two programs: the README's 2-D mixture (100 DDPM steps, one Dense observation, 1,000 particles,
4 chains) and an inpainting of the shipped `digits` model (50 steps, 16 particles, 4 chains). Each
sampler is lowered and compiled in a fresh process (so nothing is cached), and the script prints
the seconds spent tracing (`lower`), compiling (`compile`) and running the compiled program, and
the size of the StableHLO.

    python benchmarks/compile_time.py                 # both programs, every sampler
    python benchmarks/compile_time.py --programs gmm --samplers twisted
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SAMPLERS = ("bootstrap", "twisted", "fk_steering", "svdd", "mcgdiff", "dps")


def measure(program_name: str, sampler_name: str) -> dict:
    import jax
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    import pp_diffusion as ppd
    from pp_diffusion import _infer
    from pp_diffusion.program import inspect_program

    if program_name == "gmm":
        gmm = ppd.GaussianMixture(np.ones(4), 4.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]))
        prior = ppd.DiffusionPrior(gmm.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=100)
        op = ppd.operators.Dense(np.array([[1.0, 0.5]]))
        y, noise, particles = np.array([2.0]), 0.5, 1000
    else:
        prior = ppd.DiffusionPrior(ppd.zoo.load("digits"), steps=50)
        mask = np.zeros((8, 8), bool)
        mask[:, :4] = True
        op = ppd.operators.Inpaint(mask)
        y, noise, particles = np.asarray(op(ppd.zoo.digits_data().x_test[0])), 0.1, 16

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(op(x), noise), obs=y)

    make = {"bootstrap": ppd.smc.bootstrap, "twisted": ppd.smc.twisted, "fk_steering": ppd.smc.fk_steering,
            "svdd": ppd.smc.svdd, "mcgdiff": ppd.smc.mcgdiff, "dps": ppd.guidance.dps}[sampler_name]
    sampler = make(particles)
    data = {"y": y}
    start = time.perf_counter()
    info = inspect_program(program, data)
    run_all, args = _infer._compiled_run(program, sampler, info, data)
    keys = jax.random.split(jax.random.key(0), 4)
    t0 = time.perf_counter()
    lowered = run_all.lower(keys, args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    jax.block_until_ready(compiled(keys, args))
    t3 = time.perf_counter()
    return {"setup": t0 - start, "lower": t1 - t0, "compile": t2 - t1, "run": t3 - t2,
            "hlo_mb": len(lowered.as_text()) / 1e6}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", nargs="+", default=["gmm", "digits"], choices=["gmm", "digits"])
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    print("| program | sampler | trace + lower (s) | XLA compile (s) | first run (s) | first call in all (s) | StableHLO (MB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for program in args.programs:
        for sampler in args.samplers:
            out = subprocess.run([sys.executable, __file__, "--child", program, sampler], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            total = r["setup"] + r["lower"] + r["compile"] + r["run"]
            print(f"| {program} | {sampler} | {r['setup'] + r['lower']:.2f} | {r['compile']:.2f} | {r['run']:.2f} | "
                  f"{total:.2f} | {r['hlo_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
