"""The plot (PNG, matplotlib Agg) and the results table of a bench run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT

# The bench README and the project README show the same latest figures.
READMES = (REPO_ROOT / "bench" / "README.md", REPO_ROOT / "README.md")
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
CHAOS_BEGIN = "<!-- chaos:begin -->"
CHAOS_END = "<!-- chaos:end -->"


def _ok(value: Any) -> str:
    if value is None:
        return "-"
    return "met" if value else "**missed**"


def _rate(run: dict[str, Any]) -> str:
    """A configuration's median rate, and each round's when there were several."""
    rounds = run.get("rounds_tasks_per_s", [])
    if len(rounds) < 2:
        return f"{run['tasks_per_s']}/s"
    return f"{run['tasks_per_s']}/s [rounds {', '.join(str(r) for r in rounds)}]"


def _peer(tp: dict[str, Any], key: str, flag: str) -> str:
    """A peer's figure used for the ratio, then its other configurations."""
    best = tp[key]
    text = _rate(best)
    if "worker_concurrency" in best:
        text += f" ({flag}{best['worker_concurrency']}"
        others = [r for r in tp.get(f"{key}_runs", []) if r != best]
        text += "".join(f"; {flag}{r['worker_concurrency']}: {_rate(r)}" for r in others)
        text += ")"
    return text


def _latest_reruns(reruns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest re-run of each command (the figures in the table are the newest ones)."""
    latest: dict[str, dict[str, Any]] = {}
    for rerun in reruns:
        command = rerun["command"].replace(" --no-readme", "")
        latest.pop(command, None)
        latest[command] = rerun
    return list(latest.values())


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(benchmark, figure, target, met?) rows."""
    out: list[tuple[str, str, str, str]] = []
    tp = results.get("throughput") or {}
    if "engine" in tp:
        e = tp["engine"]
        out.append(
            (
                f"1. end-to-end throughput ({e['tasks']} tasks, 2 worker processes"
                + (f", median of {tp['rounds']} rounds)" if tp.get("rounds", 1) > 1 else ")"),
                f"engine {_rate(e)} ({e.get('agent_concurrency', 4)} agent threads "
                f"each); raw Celery no-op {_peer(tp, 'celery_noop', '-c ')}; "
                f"procrastinate no-op {_peer(tp, 'procrastinate_noop', 'concurrency ')}"
                + (
                    "; with Flower's task events on, as celeryconfig.py has them"
                    if "engine_without_events" in tp
                    else ""
                ),
                "-",
                "-",
            )
        )
        out.append(
            (
                "1a. engine / raw Celery no-op"
                + (", task events on" if "engine_without_events" in tp else ""),
                f"{tp['ratio_vs_celery']}",
                ">= 0.5",
                _ok(tp["targets"]["at_least_half_of_celery"]),
            )
        )
        if "engine_without_events" in tp:
            out.append(
                (
                    "1a. engine / raw Celery no-op, task events off (ORCH_TASK_EVENTS=off)",
                    f"{tp['ratio_vs_celery_without_events']}: engine "
                    f"{_rate(tp['engine_without_events'])}; raw Celery no-op "
                    f"{_peer(tp, 'celery_noop_without_events', '-c ')}",
                    ">= 0.5",
                    _ok(tp["targets"]["at_least_half_of_celery_without_events"]),
                )
            )
        out.append(
            (
                "1b. engine / procrastinate no-op",
                f"{tp['ratio_vs_procrastinate']}",
                ">= 2",
                _ok(tp["targets"]["at_least_twice_procrastinate"]),
            )
        )
    lat = results.get("latency") or {}
    if "engine" in lat:
        e, s = lat["engine"], lat["seed_style"]
        out.append(
            (
                f"2. unblock latency, chain of {e['chain']}: p50",
                f"{e['p50_ms']} ms (seed-style 2 s polling: {s['p50_ms']} ms)",
                "<= 10 ms",
                _ok(lat["targets"]["p50_at_most_10ms"]),
            )
        )
        out.append(
            (
                "2. unblock latency: p99",
                f"{e['p99_ms']} ms (seed-style: {s['p99_ms']} ms)",
                "<= 50 ms",
                _ok(lat["targets"]["p99_at_most_50ms"]),
            )
        )
    pc = results.get("passcost") or {}
    if "rows" in pc:
        figures = "; ".join(f"{r['blocked']:,} blocked: {r['median_ms']} ms" for r in pc["rows"])
        out.append(
            (
                f"3. pass time ({pc['rows'][0]['ready']} ready), median",
                f"{figures} (ratio {pc['ratio_largest_vs_smallest']})",
                "<= 2x",
                _ok(pc["targets"]["within_2x"]),
            )
        )
    ed = results.get("edges") or {}
    if "rows" in ed:
        api = "; ".join(f"{r['tasks']:,} tasks: {r['api_edges_per_s']}/s" for r in ed["rows"])
        floors = [r["commit_floor_per_s"] for r in ed["rows"] if "commit_floor_per_s" in r]
        if floors:
            api += (
                f" (its floor, a transaction inserting one row and committing durably: "
                f"{min(floors):,}-{max(floors):,}/s)"
            )
        clients = "; ".join(
            f"{r['tasks']:,} tasks: {r['clients_edges_per_s']}/s ({r['clients_vs_api']}x)"
            for r in ed["rows"]
            if "clients_edges_per_s" in r
        )
        together = [
            r["clients_commit_floor_per_s"] for r in ed["rows"] if "clients_commit_floor_per_s" in r
        ]
        if clients and together:
            clients += (
                f" (beside it, as many clients each committing a one-row transaction per "
                f"request: {min(together):,}-{max(together):,}/s)"
            )
        servers = "; ".join(
            f"{r['tasks']:,} tasks: {r['servers_edges_per_s']}/s"
            + (
                f" [rounds {', '.join(map(str, r['servers_rounds']))}]"
                if "servers_rounds" in r
                else ""
            )
            for r in ed["rows"]
            if "servers" in r
        )
        plan = "; ".join(f"{r['tasks']:,} tasks: {r['plan_edges_per_s']}/s" for r in ed["rows"])
        batch = "; ".join(
            f"{r['tasks']:,} tasks: {r['batch_edges_per_s']}/s"
            + (f" ({r['batch_vs_floor']}x the floor)" if "batch_vs_floor" in r else "")
            for r in ed["rows"]
            if "batch_edges_per_s" in r
        )
        stored = [r["batch_floor_per_s"] for r in ed["rows"] if "batch_floor_per_s" in r]
        if batch and stored:
            batch += (
                f" (the floor, {ed['rows'][-1]['batch_size']:,} rows a transaction inserted "
                "straight into task_dependencies and committed durably: "
                f"{min(stored):,}-{max(stored):,}/s)"
            )
        out.append(
            (
                "4. edges/s, one edge per request (add_dependency)",
                api,
                ">= 5,000/s at 100,000",
                _ok(ed["targets"]["api_5000_per_s_at_largest"]),
            )
        )
        if clients:
            out.append(
                (
                    f"4. edges/s, one edge per request from {ed['rows'][-1]['clients']} "
                    "client threads at once, sharing statements (x: of one client)",
                    clients,
                    ">= 5,000/s at 100,000",
                    _ok(ed["targets"].get("clients_5000_per_s_at_largest")),
                )
            )
        if servers:
            procs, threads = ed["rows"][-1]["servers"], ed["rows"][-1]["server_threads"]
            out.append(
                (
                    f"4. edges/s, one edge per request from {procs * threads} clients in {procs}"
                    f" processes of {threads} threads (as `gunicorn -w {procs} --threads"
                    f" {threads}` serves them)",
                    servers,
                    ">= 5,000/s at 100,000",
                    _ok(ed["targets"].get("servers_5000_per_s_at_largest")),
                )
            )
        if batch:
            out.append(
                (
                    "4. edges/s, batches of 1,000 edges (add_dependencies, POST .../dependencies)",
                    batch,
                    ">= 5,000/s at 100,000",
                    _ok(ed["targets"].get("batch_5000_per_s_at_largest")),
                )
            )
        rand = "; ".join(
            f"{r['tasks']:,} tasks: {r['random_edges_per_s']}/s"
            + (f" ({r['random_vs_floor']}x the floor)" if "random_vs_floor" in r else "")
            + (
                f", its statements alone {r['random_statements_alone_per_s']}/s"
                if "random_statements_alone_per_s" in r
                else ""
            )
            for r in ed["rows"]
            if "random_edges_per_s" in r
        )
        if rand:
            out.append(
                (
                    "4. edges/s, batches of 1,000 edges in random directions (add_dependencies)",
                    rand,
                    ">= 5,000/s at 100,000",
                    _ok(ed["targets"].get("random_5000_per_s_at_largest")),
                )
            )
        out.append(
            (
                "4. edges/s, bulk through create_plan",
                plan,
                ">= 5,000/s at 100,000",
                _ok(ed["targets"]["plan_5000_per_s_at_largest"]),
            )
        )
    so = results.get("soak") or {}
    if "growth_mib" in so:
        growth = ", ".join(
            f"{k.removesuffix('_mib')} {v:+} MiB" for k, v in so["growth_mib"].items()
        )
        out.append(
            (
                f"5. RSS growth after warm-up ({so['tasks']:,} tasks, {so['tasks_per_s']}/s)",
                growth,
                "< 10 MB",
                _ok(so["targets"]["growth_under_10mb"]),
            )
        )
    for key in ("throughput", "latency", "passcost", "edges", "soak"):
        if isinstance(results.get(key), dict) and "error" in results[key]:
            out.append((key, f"failed: {results[key]['error']}", "-", "**missed**"))
    return out


def table(results: dict[str, Any]) -> str:
    lines = ["| benchmark | measured | target | |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows(results)]
    return "\n".join(lines)


def write_readme(results: dict[str, Any]) -> None:
    machine = results.get("machine", {})
    block = "\n".join(
        [
            BEGIN,
            f"Measured by `{results.get('command', 'python -m bench.run').strip()}` at commit "
            f"`{results.get('commit')}` on {machine.get('when')}: {machine.get('cores')} cores "
            f"({machine.get('cpu')}), PostgreSQL {machine.get('postgresql')}, "
            f"{(machine.get('redis') or '').split(' sha')[0]}, Python {machine.get('python')}; "
            f"whole run {results.get('wall_s')} s. Raw figures: `bench/results/bench.json`; "
            "plot: `bench/results/bench.png`."
            + "".join(
                f" Re-run afterwards: `{r['command']}` at `{r['commit']}` ({r.get('wall_s')} s)."
                for r in _latest_reruns(results.get("partial_reruns", []))
            ),
            "",
            table(results),
            END,
        ]
    )
    _replace_block(BEGIN, END, block)


def write_chaos_summary(result: dict[str, Any]) -> None:
    details = result.get("details", {})
    block = "\n".join(
        [
            CHAOS_BEGIN,
            f"`{result.get('command', 'python -m bench.chaos').strip()}` at commit "
            f"`{result.get('commit')}` (`bench/results/chaos.json`): {result.get('tasks'):,} tasks "
            f"in diamonds, a worker SIGKILLed {result.get('sigkills')} times, Redis restarted "
            f"empty: {_yes(result.get('redis_restarted_empty'))}, PostgreSQL crash-restarted: "
            f"{_yes(result.get('postgres_restarted'))}, {result.get('beats')} beats at once. "
            f"Tasks lost {result.get('tasks_lost')}, completed twice "
            f"{result.get('completed_twice')}, workers over capacity "
            f"{result.get('workers_over_capacity')} (sampled every 0.5 s and at the end), "
            f"counter drift {result.get('counter_drift')}; "
            + (
                f"{result['decompositions']} goals decomposed in the background meanwhile, "
                f"{result.get('decompositions_not_succeeded')} of them not succeeded and "
                f"{result.get('plans_created_twice')} plan tasks created twice or missing; "
                if "decompositions" in result
                else ""
            )
            + (
                f"finished in {result.get('seconds')} s"
                if result.get("finished")
                else "**did not finish**"
            )
            + f" ({details.get('tasks_executed_more_than_once', 0)} tasks ran more than once after "
            "a kill, each completed once).",
            CHAOS_END,
        ]
    )
    _replace_block(CHAOS_BEGIN, CHAOS_END, block)


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _replace_block(begin: str, end: str, block: str) -> None:
    for readme in READMES:
        text = readme.read_text()
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = head + block + rest.split(end, 1)[1]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        readme.write_text(text)


def plot(results: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    ax = axes[0][0]
    tp = results.get("throughput") or {}
    if "engine" in tp:
        names = [
            f"engine\n{tp['engine'].get('agent_concurrency', 4)} threads",
            f"Celery no-op\n-c {tp['celery_noop'].get('worker_concurrency', 1)}",
            f"procrastinate\nconcurrency {tp['procrastinate_noop'].get('worker_concurrency', 1)}",
        ]
        values = [
            tp["engine"]["tasks_per_s"],
            tp["celery_noop"]["tasks_per_s"],
            tp["procrastinate_noop"]["tasks_per_s"],
        ]
        colors = ["tab:blue", "tab:gray", "tab:orange"]
        if "engine_without_events" in tp:
            names[:2] = [n + "\nevents on" for n in names[:2]]
            names[2:2] = [
                "engine\nevents off",
                "Celery no-op\n-c "
                f"{tp['celery_noop_without_events'].get('worker_concurrency', 1)}\nevents off",
            ]
            values[2:2] = [
                tp["engine_without_events"]["tasks_per_s"],
                tp["celery_noop_without_events"]["tasks_per_s"],
            ]
            colors[2:2] = ["tab:cyan", "silver"]
        ax.bar(names, values, color=colors)
        ax.tick_params(axis="x", labelsize=7)
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.0f}", ha="center", va="bottom")
    ax.set_title("1. throughput (tasks/s, 2 worker processes)")
    ax = axes[0][1]
    lat = results.get("latency") or {}
    if "engine" in lat:
        raw = sorted(lat["engine"].get("raw_ms", []))
        if raw:
            ax.plot(raw, [i / len(raw) for i in range(1, len(raw) + 1)], label="engine")
        ax.axvline(10, color="green", ls="--", label="p50 target 10 ms")
        ax.axvline(50, color="red", ls="--", label="p99 target 50 ms")
        ax.set_xscale("log")
        ax.axvline(lat["seed_style"]["p50_ms"], color="tab:gray", label="seed-style p50 (2 s poll)")
        ax.legend(fontsize=8)
    ax.set_title("2. unblock latency CDF (ms)")
    ax = axes[0][2]
    pc = results.get("passcost") or {}
    if "rows" in pc:
        xs = [r["blocked"] for r in pc["rows"]]
        ax.plot(xs, [r["median_ms"] for r in pc["rows"]], "o-", label="median")
        ax.plot(xs, [r["p90_ms"] for r in pc["rows"]], "x--", label="p90")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    ax.set_title("3. pass time (ms) vs blocked backlog")
    ax = axes[1][0]
    ed = results.get("edges") or {}
    if "rows" in ed:
        xs = [r["tasks"] for r in ed["rows"]]

        def route(key: str, style: str, label: str, floor: str | None = None) -> None:
            """One insert path, and its floor measured in the same run (dotted, same colour)."""
            if not all(key in r for r in ed["rows"]):
                return
            (line,) = ax.plot(xs, [r[key] for r in ed["rows"]], style, label=label)
            if floor and all(floor in r for r in ed["rows"]):
                ax.plot(
                    xs,
                    [r[floor] for r in ed["rows"]],
                    ":",
                    color=line.get_color(),
                    label=f"{label}: its floor",
                )

        clients = ed["rows"][-1].get("clients")
        route("api_edges_per_s", "o-", "add_dependency", "commit_floor_per_s")
        route(
            "clients_edges_per_s",
            "d-",
            f"add_dependency, {clients} clients",
            "clients_commit_floor_per_s",
        )
        last = ed["rows"][-1]
        route(
            "servers_edges_per_s",
            "D-",
            f"add_dependency, {last.get('servers')}x{last.get('server_threads')} clients",
        )
        route("plan_edges_per_s", "s-", "create_plan")
        route("batch_edges_per_s", "^-", "add_dependencies", "batch_floor_per_s")
        route(
            "random_edges_per_s",
            "v-",
            "add_dependencies, random directions",
            "random_statements_alone_per_s",
        )
        ax.axhline(5000, color="red", ls="--", label="target 5,000/s")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=6, framealpha=0.6)
    ax.set_title("4. dependency edges/s vs tasks in team")
    ax = axes[1][1]
    so = results.get("soak") or {}
    samples = so.get("samples") or []
    if samples:
        xs = [s["completed"] for s in samples]
        for key in samples[0]:
            if key.endswith("_mib") and not key.endswith("main_mib"):
                ax.plot(xs, [s[key] for s in samples], label=key.removesuffix("_mib"))
        ax.legend(fontsize=8)
    ax.set_title("5. RSS (MiB) vs tasks completed")
    axes[1][2].axis("off")
    axes[1][2].text(
        0,
        1,
        "\n".join(f"{a}: {b}" for a, b, _, _ in rows(results))[:2500],
        va="top",
        fontsize=7,
        wrap=True,
    )
    machine = results.get("machine", {})
    fig.suptitle(
        f"agent orchestration benchmarks — {machine.get('cores')} cores, "
        f"PostgreSQL {machine.get('postgresql')}, commit {results.get('commit')}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
