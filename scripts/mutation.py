"""Mutation score of the Python core (mutmut 3.8.1) and hand-made C++ mutants.

    python scripts/mutation.py                      # every module of MODULES, then the C++ mutants
    python scripts/mutation.py reference clip       # some modules (by their short name)
    python scripts/mutation.py --cpp-only           # the C++ mutants alone
    python scripts/mutation.py --no-cpp -j 2        # Python only, 2 mutants at a time
    python scripts/mutation.py --budget 900 loop    # stop a module after 900 s: the score of those run
    python scripts/mutation.py --rescore out.json   # a --json report scored with today's EQUIVALENT table

Not part of the test command: it runs the tests once per mutant (tens of minutes on two
cores). Each module is mutated in a temporary copy of the repository (the tracked files
and the built extension pnn_ext/_C*.so), with mutmut told to mutate that one file and to
run only the tests that exercise it (MODULES below): the score of a module is what its
own tests kill. Prints one line per module (killed / mutants, score, wall time) and the
fate of each C++ mutant; exits 1 if a C++ mutant survives.

C++: each mutant edits a temporary copy of csrc/; kernels under csrc/cuda/ (and the
shared math, csrc/polyact.h) run through the emulated CUDA tests
(tests/test_cuda_kernels_emulated.py), those under csrc/cpu/ through the CPU op tests
(tests/test_ops.py) against the copy's CPU extension, built in the copy with
PNN_EXT_CUDA=0 (setup.py; objects kept in the copy's build/ between mutants).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Module -> the tests that exercise it. When a module moves or splits, edit this table.
MODULES = {
    # (torch.compile cannot trace through mutmut's trampolines: the compile tests stay out)
    "reference": ("pnn_ext/reference.py", ["tests/test_reference.py", "tests/test_poly_activation.py",
                                           "tests/test_op_registration.py::test_bad_arguments_name_the_argument",
                                           "tests/test_op_registration.py::test_opcheck"]),
    "fitting": ("pnn_ext/fitting.py", ["tests/test_fitting.py", "tests/test_activations.py"]),
    "nn": ("pnn_ext/nn.py", ["tests/test_poly_activation.py", "tests/test_convert.py", "tests/test_clip.py"]),
    "clip": ("pnn_ext/clip.py", ["tests/test_clip.py"]),
    "loop": ("pnn_ext/train/loop.py", ["tests/test_trainer.py"]),
    "guard": ("pnn_ext/train/guard.py", ["tests/test_guard.py"]),
    "optim": ("pnn_ext/train/optim.py", ["tests/test_optim.py", "tests/test_loop.py"]),
    "checkpoint": ("pnn_ext/train/checkpoint.py", ["tests/test_checkpoint_file.py"]),
    "resume": ("pnn_ext/train/resume.py", ["tests/test_checkpoint.py"]),
    "he.fold": ("pnn_ext/he/fold.py", ["tests/test_fold.py", "tests/test_he.py::test_folded_model_matches_original",
                                       "tests/test_he.py::test_fold_evaluates_each_polynomial_in_t",
                                       "tests/test_he.py::test_unsupported_layer_is_named",
                                       "tests/test_he.py::test_residual_network_is_refused_by_name"]),
    "he.chebyshev": ("pnn_ext/he/chebyshev.py", ["tests/test_he_chebyshev.py"]),
}

# Equivalent mutants: survivors that change no behaviour, so no test can kill them. Module ->
# {the mutated line as mutmut writes it (stripped): why}. A survivor whose added line is listed
# is reported as equivalent and left out of the score; an entry no survivor matches is
# reported as stale (the code moved on: remove it).
EQUIVALENT = {
    "he.chebyshev": {
        "return np.polynomial.chebyshev.poly2cheb(np.asarray(coeffs, dtype=None))":
            "numpy's Chebyshev routines compute in float64 for any numeric input",
        "return np.polynomial.chebyshev.poly2cheb(np.asarray(coeffs, ))":
            "numpy's Chebyshev routines compute in float64 for any numeric input",
        "return np.polynomial.chebyshev.chebval(t, np.asarray(coeffs, dtype=None))":
            "numpy's Chebyshev routines compute in float64 for any numeric input",
        "return np.polynomial.chebyshev.chebval(t, np.asarray(coeffs, ))":
            "numpy's Chebyshev routines compute in float64 for any numeric input",
    },
    "checkpoint": {
        "found.append(f\"{name} (intact, epoch {load(other, others=None)['epoch']})\")":
            "None is false as False is: the other checkpoint's own neighbours are not listed",
        "return f\" Other checkpoints in its directory: {'XX, XX'.join(found)}.\" if found else \"\"":
            "a checkpoint has one other beside it at most (CHECKPOINTS: last.pt, best.pt): no separator shows",
        "np.random.set_state((\"MT19937\", n[\"keys\"].numpy().astype(None), n[\"pos\"], n[\"has_gauss\"], "
        "n[\"gauss\"]))": "numpy casts the key array to uint32 itself, and float64 holds every 32-bit key exactly",
    },
    "clip": {
        "bn = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=None)}":
            "a BatchNorm module has no children: recursing finds the same parameters",
        "bn = {id(p) for m in model.modules() if isinstance(m, _BatchNorm) for p in m.parameters(recurse=True)}":
            "a BatchNorm module has no children: recursing finds the same parameters",
        "return torch.nn.utils.get_total_norm(grads, ) if grads else torch.zeros((), device=device)":
            "get_total_norm's default norm is 2",
        "return torch.nn.utils.get_total_norm(grads, 2.0) if (grads) or True else torch.zeros((), device=device)":
            "get_total_norm([]) is a 0-d zero already",
    },
    "fitting": {
        # (a published degree returned before these lines; below 2 the first branch returns)
        "if degree <= known[0]:": "degree 2 is published: it returned before with the same entry",
        "below = max(k for k in known if k <= degree)": "degree is not a published one here: k == degree never holds",
        "above = min((k for k in known if k >= degree), default=None)":
            "degree is not a published one here: k == degree never holds",
    },
    "loop": {
        "for b in m.buffers(recurse=None)]": "a BatchNorm module has no children: recursing finds the same buffers",
        "for b in m.buffers(recurse=True)]": "a BatchNorm module has no children: recursing finds the same buffers",
        "torch.zeros(3, device=self.device) for m in self.polys]).float()":
            "only the first two columns (max |x|, fraction past B) are read",
        "s, seen, n = totals[:5], totals[4], max(totals[5], 1)": "only s[0..3] are read",
        "sums = [0.0] * 5  # loss, ce, boundary, correct: host values train_step already synced":
            "zip() stops at a step's four values; an epoch without a good step has every sum 0, seen too",
        "self.optimizer.zero_grad(set_to_none=None)":
            "every parameter gets a gradient in the backward that follows: zeros or None, the sum is the same",
        "self.optimizer.zero_grad(set_to_none=False)":
            "every parameter gets a gradient in the backward that follows: zeros or None, the sum is the same",
    },
    "nn": {
        "return cls(degree, None, alpha, **kwargs)": "the constructor takes the preset's B for None",
        "return cls(degree, bound, None, **kwargs)": "the constructor takes the preset's alpha for None",
        "return cls(degree, bound, **kwargs)": "the constructor takes the preset's alpha for None",
        "refittable = None": "None is false as False is",
        "self.coeffs.copy_(torch.as_tensor(np.asarray(c), dtype=None))": "copy_ casts into the coefficients' dtype",
        "self.coeffs.copy_(torch.as_tensor(np.asarray(c), ))": "copy_ casts into the coefficients' dtype",
    },
    "reference": {
        "sign = torch.where((t < 0) & (m % 2 == 1), -1.0, 1.0) / torch.sign(lead)":
            "sign(lead) is +-1 (lead: the highest non-zero coefficient): dividing by it is multiplying",
        "sign = torch.where((t <= 0) & (m % 2 == 1), -1.0, 1.0) * torch.sign(lead)":
            "p(0) = c_0 never overflows: there is no NaN to fix at t = 0",
        "sign = torch.where((t < 0) & (m % 2 == 1), -2.0, 1.0) * torch.sign(lead)": "2 inf = inf: only the sign counts",
        "sign = torch.where((t < 0) & (m % 2 == 1), -1.0, 2.0) * torch.sign(lead)": "2 inf = inf: only the sign counts",
        "return torch.where(bad, sign.to(None) * math.inf, p)": "torch.where promotes +-inf to p's dtype",
        "stats = torch.stack([boundary_term(xa, bound, alpha, boundary_form).to(acc), max_abs.to(None), "
        "frac.to(acc)])": "max_abs comes from xa, already in the computation dtype",
        'def boundary_term(x: torch.Tensor, bound: float, alpha: float, boundary_form: str = "XXexpXX",':
            'every form but "quadratic" takes the exp branch, as "exp" does',
        'def boundary_term(x: torch.Tensor, bound: float, alpha: float, boundary_form: str = "EXP",':
            'every form but "quadratic" takes the exp branch, as "exp" does',
        "term = torch.where(e >= 0, e.clamp(min=0).square(), torch.where(e.isnan(), e, torch.zeros_like(e)))":
            "at e = 0 the term is 0 either way",
        "term = torch.where(e >= 0, term, torch.where(e.isnan(), e, torch.zeros_like(e)))":
            "at e = 0 the term is expm1(0) = 0 either way",
        "grads = torch.autograd.grad((y, stats[0]), inputs, (grad_y, grad_stats[0]), allow_unused=None)":
            "y always depends on x and on the coefficients: nothing is unused",
        "grads = torch.autograd.grad((y, stats[0]), inputs, (grad_y, grad_stats[0]), allow_unused=False)":
            "y always depends on x and on the coefficients: nothing is unused",
        "grads = torch.autograd.grad((y, stats[0]), inputs, (grad_y, grad_stats[0]), )":
            "y always depends on x and on the coefficients: nothing is unused",
        "gx = grads[0] if (grads[0] is not None) or True else torch.zeros_like(x)":
            "y always depends on x: its gradient is never None",
        "gx = grads[0] if grads[0] is not None else torch.zeros_like(None)":
            "y always depends on x: its gradient is never None",
        "return gx.to(None), gc": "autograd returns x's gradient in x's dtype already",
    },
    "guard": {
        "saved_scale = restore(trainer, target, counters=None)": "None is false as False is: the counters are kept",
    },
}

# (name, file under csrc/, text, its mutation). Each must fail at least one test.
CPP_MUTANTS = [
    ("cuda forward tail loop off by one", "cuda/polyact_kernels.cuh",
     "i < a.n; i += stride) {\n    const acc_t xv = static_cast<acc_t>(a.x[i]);\n    const acc_t t =",
     "i + 1 < a.n; i += stride) {\n    const acc_t xv = static_cast<acc_t>(a.x[i]);\n    const acc_t t ="),
    ("cuda boundary gradient sign", "cuda/polyact_kernels.cuh",
     "out += xv < acc_t(0) ? -s : s;", "out += xv < acc_t(0) ? s : -s;"),
    ("Clenshaw step (shared math)", "polyact.h",
     "V bk = madd(two_t[u], b1[u], c[k] - b2[u]);\n      b2[u]",
     "V bk = madd(two_t[u], b1[u], c[k] + b2[u]);\n      b2[u]"),
    ("Clenshaw derivative step (shared math)", "polyact.h",
     "V dk = madd(two_t[u], d1[u], (b1[u] + b1[u]) - d2[u]);", "V dk = madd(two_t[u], d1[u], b1[u] - d2[u]);"),
    ("cpu forward tail loop off by one", "cpu/polyact_cpu_impl.h",
     "std::min<int64_t>(W, n - i);\n    const Vec xv = load_vec<scalar_t, acc_t>(x + i * xs, xs, cnt);\n"
     "    const Vec t",
     "std::min<int64_t>(W, n - i - 1);\n    const Vec xv = load_vec<scalar_t, acc_t>(x + i * xs, xs, cnt);\n"
     "    const Vec t"),
    ("cpu boundary gradient sign", "cpu/polyact_cpu_impl.h",
     "gxv = gxv + Vec::blendv(s, zero - s, xv < zero);", "gxv = gxv + Vec::blendv(zero - s, s, xv < zero);"),
]


def copy_repository(dest: str) -> None:
    """The tracked files and the built extension, as a fresh clone after its build has them."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = os.path.join(ROOT, rel)
        if os.path.isfile(src):
            os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
            shutil.copy2(src, os.path.join(dest, rel))
    for lib in glob.glob(os.path.join(ROOT, "pnn_ext", "_C*.so")):
        shutil.copy2(lib, os.path.join(dest, "pnn_ext"))


def mutmut_config(module: str, tests: list[str]) -> str:
    quoted = ", ".join(f'"{t}"' for t in tests)
    return ("\n[tool.mutmut]\n"
            'source_paths = ["pnn_ext"]\n'
            f'only_mutate = ["{module}"]\n'
            f"pytest_add_cli_args_test_selection = [{quoted}]\n"
            # "-p torch._dynamo": imported once in mutmut's fork server (its warm-up collects the tests)
            # instead of in every mutant's child, where the first optimizer built would pay it (~3 s)
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-p", "torch._dynamo", "-q", "-x"]\n'
            'also_copy = ["bench"]\n'
            # torch is not fork-safe after the tests ran in the parent: fork from a clean server
            'process_isolation = "forkserver"\n')


def score_module(name: str, jobs: int, budget: float) -> dict:
    module, tests = MODULES[name]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"pnn-mutation-{name}-") as tmp:
        copy_repository(tmp)
        with open(os.path.join(tmp, "pyproject.toml"), "a") as f:
            f.write(mutmut_config(module, [t for t in tests if os.path.exists(os.path.join(tmp, t.split("::")[0]))]))
        env = dict(os.environ, PNN_EXT_REQUIRE_EXTENSION="1", OMP_NUM_THREADS="1")
        # Its own session, so that a budget's end stops mutmut's workers with it.
        proc = subprocess.Popen([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs)], cwd=tmp,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=budget or None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            out, err = proc.communicate()
        else:
            if proc.returncode != 0:
                raise SystemExit(f"mutmut failed on {module} (rc {proc.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
        subprocess.run([sys.executable, "-m", "mutmut", "export-cicd-stats"], cwd=tmp, env=env, check=True,
                       capture_output=True)
        stats = json.load(open(os.path.join(tmp, "mutants", "mutmut-cicd-stats.json")))
        results = subprocess.run([sys.executable, "-m", "mutmut", "results"], cwd=tmp, env=env,
                                 capture_output=True, text=True).stdout
        found = {}
        for line in results.splitlines():
            mutant, _, status = line.strip().rpartition(": ")
            if status not in ("survived", "no tests"):
                continue
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", mutant], cwd=tmp, env=env,
                                  capture_output=True, text=True).stdout
            found[mutant] = [f"({status})", *(ln for ln in diff.splitlines()
                                               if ln[:1] in "+-" and ln[:3] not in ("+++", "---"))]
    stats.update(module=module, seconds=time.monotonic() - start)
    return classify(name, stats, found)


def classify(name: str, stats: dict, found: dict[str, list[str]]) -> dict:
    """``stats`` with the mutants that were not killed, ``found`` (mutant -> ["(status)", diff
    lines]), split into survivors and equivalent mutants (EQUIVALENT), and its score."""
    known = EQUIVALENT.get(name, {})
    survivors, equivalent = {}, {}
    for mutant, lines in found.items():
        why = next((known[ln[1:].strip()] for ln in lines if ln[:1] == "+" and ln[1:].strip() in known), None)
        if why is not None and lines[0] == "(survived)":
            equivalent[mutant] = [*lines[1:], f"equivalent: {why}"]
        else:
            survivors[mutant] = lines
    matched = {ln[1:].strip() for lines in equivalent.values() for ln in lines if ln[:1] == "+"}
    caught = stats["killed"] + stats["timeout"] + stats["segfault"]
    # a mutant no test reaches counts as survived
    judged = caught + stats["survived"] + stats["suspicious"] + stats["no_tests"] - len(equivalent)
    return {**stats, "survivors": survivors, "equivalent": equivalent, "caught": caught, "judged": judged,
            "stale_equivalents": sorted(set(known) - matched), "score": caught / judged if judged else float("nan")}


def print_module(s: dict) -> None:
    print(f"{s['module']:30} {s['caught']:7d} {s['judged']:6d} {s['total']:8d} {len(s['equivalent']):6d} "
          f"{100 * s['score']:6.1f}% {s['timeout']:8d} {s['no_tests']:8d} {s['seconds']:7.0f}", flush=True)
    for kind in ("survivors", "equivalent"):
        for mutant, diff in s[kind].items():
            print(f"    {kind}: {mutant}", *(f"        {line}" for line in diff), sep="\n", flush=True)
    for line in s["stale_equivalents"]:
        print(f"    stale equivalent entry (no survivor has it): {line}", flush=True)


def rescore(path: str) -> None:
    """The modules of a --json report scored again with the EQUIVALENT table as it is now."""
    names = {module: name for name, (module, _) in MODULES.items()}
    for s in json.load(open(path))["modules"]:
        found = {**s["survivors"], **{m: ["(survived)", *(ln for ln in lines if ln[:1] in "+-")]
                                      for m, lines in s["equivalent"].items()}}
        print_module(classify(names[s["module"]], s, found))


def run_cpp_mutant(tmp: str, name: str, rel: str, old: str, new: str) -> tuple[bool, str]:
    """(caught, how) for one mutant applied to tmp's csrc/ (restored afterwards)."""
    path = os.path.join(tmp, "csrc", rel)
    original = open(path).read()
    if original.count(old) != 1:
        raise SystemExit(f"C++ mutant {name!r}: the text to mutate is not once in csrc/{rel}")
    open(path, "w").write(original.replace(old, new))
    env = dict(os.environ, PNN_EXT_REQUIRE_EXTENSION="1")
    try:
        if rel.startswith("cpu/"):
            build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tmp,
                                   env=dict(env, PNN_EXT_CUDA="0"), capture_output=True, text=True)
            if build.returncode != 0:
                return True, "the build fails"
            tests = ["tests/test_ops.py"]
        else:
            tests = ["tests/test_cuda_kernels_emulated.py"]
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=tmp,
                           env=env, capture_output=True, text=True)
        failed = [ln for ln in r.stdout.splitlines() if ln.startswith("FAILED")]
        return r.returncode != 0, (failed[0] if failed else f"pytest rc {r.returncode}")
    finally:
        open(path, "w").write(original)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", help=f"short names of MODULES (default: all): {', '.join(MODULES)}")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds per module (default: none); past it the score is of the mutants run so far")
    ap.add_argument("--no-cpp", action="store_true", help="skip the C++ mutants")
    ap.add_argument("--cpp-only", action="store_true", help="only the C++ mutants")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--rescore", metavar="JSON",
                    help="print the scores of a --json report again, with the EQUIVALENT table as it is now")
    args = ap.parse_args(argv)
    header = (f"{'module':30} {'killed':>7} {'run':>6} {'mutants':>8} {'equiv':>6} {'score':>7} {'timeout':>8} "
              f"{'no test':>8} {'wall s':>7}")
    if args.rescore:
        print(header)
        rescore(args.rescore)
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"unknown module(s) {', '.join(unknown)}; one of {', '.join(MODULES)}")
    report = {"modules": [], "cpp": []}
    if not args.cpp_only:
        print(header, flush=True)
        for name in args.modules or list(MODULES):
            s = score_module(name, args.jobs, args.budget)
            report["modules"].append(s)
            print_module(s)
    ok = True
    if not args.no_cpp:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pnn-mutation-cpp-") as tmp:
            copy_repository(tmp)
            for name, rel, old, new in CPP_MUTANTS:
                caught, how = run_cpp_mutant(tmp, name, rel, old, new)
                ok &= caught
                report["cpp"].append({"mutant": name, "file": f"csrc/{rel}", "caught": caught, "by": how})
                print(f"C++ {'caught  ' if caught else 'SURVIVED'} {name} (csrc/{rel}): {how}", flush=True)
        print(f"C++ mutants: {time.monotonic() - start:.0f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
