"""ablate.py: every paper row is reachable through train.py's flags, the statistics and claims are
right, and `--quick` runs a table end to end, resumes without redoing finished jobs."""
import json
import os
import statistics
import sys

import pytest

import ablate
import train
from conftest import run

PY = sys.executable


def planned(tables, seeds=2):
    args = ablate.get_args(["--tables", *map(str, tables), "--seeds", str(seeds), "--out-dir", "/nonexistent/ab"])
    return ablate.plan(args)


def train_args(job):
    """The train.py flags of a planned job, parsed by train.py's own parser."""
    assert job.cmd[1] == "train.py", job.cmd
    return train.get_args(job.cmd[2:], announce=False)


def test_every_paper_row_is_a_train_py_flag_set_with_the_paper_setting():
    jobs = planned(range(1, 7))
    got = {k: train_args(j) for k, j in jobs.items() if j.cmd[1] == "train.py" and k.endswith("-s1")}
    for n in (3, 5, 7, 9, 11):                                           # Table 3
        a = got[f"local-N{n}-s1"]
        assert (a.window, a.query, a.fusion, a.hand_weights) == (n, "none", "local", "fixed")
        assert list(a.fixed_weights) == [14, 10, 2]                      # §4.4.2
    assert got["global-s1"].fusion == "global" and got["local+global-s1"].fusion == "local+global"
    assert (got["mean-q5-s1"].query, got["mean-q5-s1"].query_span) == ("mean", 5)
    assert (got["attention-q3-s1"].query, got["attention-q3-s1"].query_span) == ("attention", 3)
    a = got["dyn-1.4-1.0-x10-s1"]                                         # Table 5
    assert (a.hand_weights, list(a.hand_base), a.s_max) == ("dynamic", [1.4, 1.0], 10)
    assert got["entangled-global-s1"].vae.endswith(os.path.join("vae-entangled", "best.pt"))
    assert train_args(jobs["vae-entangled"]).vae_variant == "entangled"
    p2, kl = got["phase2-no-kl-s1"], got["phase2-kl-s1"]                 # Table 6: same start, KL or not
    assert p2.phase == kl.phase == 2 and p2.init == kl.init and p2.init.endswith(os.path.join("dyn-3.5-2.5-x4-s1", "best.pt"))
    assert p2.kl_weight == 0 and kl.kl_weight > 0
    assert all(a.seed == 1 for a in got.values())
    # every table row has an evaluation per seed, scored with the one shared back-translator
    rows = {v for t in ablate.TABLES.values() for _, v, _ in t[1]}
    for v in rows:
        for seed in (0, 1):
            cmd = jobs[f"eval-{v}-s{seed}"].cmd
            assert cmd[cmd.index("--split") + 1] == "dev"
            assert cmd[cmd.index("--backtranslator") + 1].endswith(os.path.join("backtranslation", "best.pt"))


def test_shared_stages_are_trained_once():
    jobs = planned([2, 3], seeds=3)
    assert [k for k in jobs if k.startswith("vae-")] == ["vae-base"]
    assert sum(k == "backtranslation" for k in jobs) == 1
    # local-N3 is a row of both tables, trained once per seed
    assert sorted(k for k in jobs if k.startswith("local-N3-")) == ["local-N3-s0", "local-N3-s1", "local-N3-s2"]
    assert len([k for k in jobs if not k.startswith(("eval-", "vae-", "backtranslation", "corpus"))]) == 6 * 3


def test_mean_std_and_claims_against_the_statistics_module():
    xs = [3.0, 5.5, 4.25]
    m, sd = ablate.mean_std(xs)
    assert m == pytest.approx(statistics.mean(xs)) and sd == pytest.approx(statistics.stdev(xs))
    assert ablate.mean_std([2.0]) == (2.0, 0.0)
    got = {"a": {"seeds": [{"B4": 11.0}, {"B4": 13.0}]}, "b": {"seeds": [{"B4": 8.0}, {"B4": 9.0}]},
           "c": {"seeds": [{"B4": 11.0}, {"B4": 11.5}]}}
    c = ablate.judge("a best", "a", ["b", "c"], got)                  # c is the stronger rival
    pooled = ((statistics.stdev([11, 13]) ** 2 + statistics.stdev([11, 11.5]) ** 2) / 2) ** 0.5
    assert c["held"] is True and c["strongest_rival"] == "c"
    assert c["delta_B4"] == pytest.approx(12.0 - 11.25) and c["sigmas"] == pytest.approx(0.75 / pooled)
    one = {"a": {"seeds": [{"B4": 3.0}]}, "b": {"seeds": [{"B4": 2.0}]}}
    assert ablate.judge("a > b", "a", ["b"], one)["sigmas"] is None      # one seed: no spread to compare to


def test_the_columns_are_evaluate_py_s():
    import metrics
    assert ablate.METRICS == metrics.COLUMNS and ablate.ARROWS == metrics.ARROWS


def write_eval(out, variant, seed, **cols):
    """A results.json as evaluate.py writes it: GT, VAE and the variant's row."""
    path = ablate.eval_path(str(out), variant, seed)
    os.makedirs(os.path.dirname(path))
    gt = {"name": "GT", **{m: 1.0 for m in cols}, "DTW": 0.0, "TotDist": 1.0, "Dur": 1.0}
    rows = [gt, {"name": "VAE", **cols}, {"name": "A2V-SLP", **cols}]
    with open(path, "w") as f:
        json.dump({"rows": rows}, f)


def test_every_column_is_tabulated_as_mean_and_std_over_seeds(tmp_path):
    """Two seeds of each Table 2 row with every column (local-N3 is also a Table 3 row); one seed of
    a Table 3 row from a results.json written before WER, TotDist and Dur existed: its new columns
    are '–', not an error."""
    args = ablate.get_args(["--tables", "2", "3", "--seeds", "2", "--out-dir", str(tmp_path)])
    values = {}
    for k, v in enumerate(["global", "local-N3"]):
        for seed in (0, 1):
            cols = {m: 10.0 * k + seed + i / 8 for i, m in enumerate(ablate.METRICS)}
            values.setdefault(v, []).append(cols)
            write_eval(tmp_path, v, seed, **cols)
    write_eval(tmp_path, "local-N5", 0, **{m: 5.0 for m in ablate.PAPER_METRICS + ("DTW",)})
    summary = ablate.summarize(args, ablate.collect(args), 0.0)
    rows = {r["name"]: r for r in summary["tables"]["2"]["rows"]}
    for name, v in (("w/ Global Self-Attention", "global"), ("w/ Gloss Attention (N=3)", "local-N3")):
        assert rows[name]["seeds"] == 2                     # local-N3, a row of Tables 2 and 3: read once
        for m in ablate.METRICS:
            xs = [c[m] for c in values[v]]
            assert rows[name]["mean"][m] == pytest.approx(statistics.mean(xs))
            assert rows[name]["std"][m] == pytest.approx(statistics.stdev(xs))
    assert rows["GT (dev)"]["mean"]["TotDist"] == rows["GT (dev)"]["mean"]["Dur"] == 1.0
    assert set(rows["GT (dev)"]["paper"]) == set(ablate.PAPER_METRICS)        # the paper has no WER, TotDist, Dur
    old = next(r for r in summary["tables"]["3"]["rows"] if r["name"] == "N=5")
    assert old["mean"]["B4"] == 5.0 and old["mean"]["WER"] is None and old["std"]["TotDist"] is None
    md = ablate.markdown(summary)
    assert "| Model | DTW↓ | B1↑ | B2↑ | B3↑ | B4↑ | chrF↑ | ROUGE↑ | WER↓ | TotDist→1 | Dur→1 | paper" in md
    m = values["local-N3"]
    wer, tot = [c["WER"] for c in m], [c["TotDist"] for c in m]
    assert (f"| {statistics.mean(wer):.2f} ± {statistics.stdev(wer):.2f} | "
            f"{statistics.mean(tot):.2f} ± {statistics.stdev(tot):.2f} |") in md
    assert "| N=5 | 5.000 | 5.00 | 5.00 | 5.00 | 5.00 | 5.00 | 5.00 | – | – | – |" in md


def test_claim_that_fails_is_reported_as_failed():
    got = {"a": {"seeds": [{"B4": 10.0}, {"B4": 12.0}]}, "c": {"seeds": [{"B4": 11.0}, {"B4": 11.5}]}}
    c = ablate.judge("a beats c", "a", ["c"], got)
    pooled = ((statistics.stdev([10, 12]) ** 2 + statistics.stdev([11, 11.5]) ** 2) / 2) ** 0.5
    assert c["held"] is False
    assert c["delta_B4"] == pytest.approx(-0.25) and c["sigmas"] == pytest.approx(-0.25 / pooled)
    assert ablate.judge("x", "a", ["missing"], got)["held"] is None


def test_quick_table_end_to_end_and_resume(tmp_path):
    out = tmp_path / "ab"
    cmd = [PY, "ablate.py", "--tables", "2", "--seeds", "1", "--quick", "--out-dir", str(out)]
    proc = run(cmd, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    md = (out / "ablations.md").read_text()
    summary = json.loads((out / "ablations.json").read_text())
    rows = summary["tables"]["2"]["rows"]
    names = [r["name"] for r in rows]
    assert names[0] == "GT (dev)" and any(n.startswith("VAE") for n in names)
    for name, variant, paper in ablate.TABLES[2][1]:
        row = next(r for r in rows if r["name"] == name)
        assert row["seeds"] == 1 and set(row["mean"]) == set(ablate.METRICS)
        assert all(v == v for v in row["mean"].values())                      # numbers, not NaN
        assert row["paper"]["B4"] == paper[3]
        assert f"| {name} |" in md
        res = json.loads((out / "runs" / f"{variant}-s0" / "eval" / "results.json").read_text())
        assert row["mean"]["B4"] == pytest.approx(res["rows"][-1]["B4"])  # the table is the evaluation's
        assert row["mean"]["TotDist"] == pytest.approx(res["rows"][-1]["TotDist"]) and row["mean"]["TotDist"] > 0
        assert row["mean"]["WER"] == pytest.approx(res["rows"][-1]["WER"])
    assert summary["tables"]["2"]["claims"][0]["held"] in (True, False)
    assert "gloss attention (N=3) > global self-attention" in md
    assert "| WER↓ | TotDist→1 | Dur→1 |" in md
    # run again: everything is done, nothing is trained, the same table comes out
    again = run(cmd, env={"OMP_NUM_THREADS": "1"}, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "7 already done, 0 to run" in again.stdout
    assert json.loads((out / "ablations.json").read_text())["tables"] == summary["tables"]


def test_a_failed_job_is_named_and_its_dependents_skipped(tmp_path):
    """A back-translator that cannot train: every evaluation waits on it, so the tables come out
    empty, the exit status is 1 and the failing job's log is named."""
    out = tmp_path / "ab"
    cmd = [PY, "ablate.py", "--tables", "2", "--seeds", "1", "--quick", "--out-dir", str(out),
           "--train-args", "--bt-heads 3"]                                  # 32 is not divisible by 3
    proc = run(cmd, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 1
    assert "FAILED backtranslation" in proc.stdout and "logs" in proc.stderr
    assert not (out / "jobs" / "backtranslation.done").exists()
    assert not any(p.name.startswith("eval-") for p in (out / "jobs").iterdir())


def test_variant_fields_give_the_flags_the_config_derives():
    """ablate.py (standard library only) names flags by the configs' rule; harness.to_flags derives
    them from GeneratorConfig itself: both agree for every variant, and the parsed flags give back
    the variant's fields."""
    import generator
    import harness
    variants = list(ablate.VARIANTS.values()) + [("base", ablate.VARIANTS[b][1] | more)
                                                 for b, more in ablate.PHASE2.values()]
    for _, fields in variants:
        assert ablate.flags(fields) == harness.to_flags(generator.GeneratorConfig, **fields)
        args = train.get_args(["--stage", "generator", "--vae", ".", "--data-dir", ".", "--out-dir", "."]
                              + ablate.flags(fields), announce=False)
        cfg = harness.from_args(generator.GeneratorConfig, args)
        assert {k: getattr(cfg, k) for k in fields} == fields
