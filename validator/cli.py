"""``pot pbft``: exercise the PBFT state machine from the command line.

``pot pbft simulate`` runs the seeded adversarial simulator
(``pot.validator.simulating``) and exits 1 on any safety violation, so CI can
run thousands of schedules; ``--broken`` runs the deliberately broken variant
(quorums of 2f instead of 2f+1) to show the checker can fail, and
``--forgeable`` the one whose replicas take any signature on a replica's own
requests (a Byzantine primary's forged requests then execute). ``--op-bytes N`` makes most
requests about N bytes (up to ``messages.MAX_OP_BYTES``) so that the cap on the request bytes
a view's PRE-PREPAREs hold (``window``) binds; the summary then counts the runs where it did.
It also counts ``wrongful_window_full``: a correct backup not behind a correct primary refusing
its PRE-PREPARE ``WINDOW_FULL`` (``simulating.Result.wrongful_window_full``). That is a liveness
bug, not a safety violation, so it is reported apart from ``violations``; any makes the command
exit 1 too.
"""

from __future__ import annotations

import time

import typer

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


@app.callback()
def main() -> None:
    """Exercise the PBFT state machine."""


@app.command()
def simulate(
    *,
    n: int = typer.Option(4, "--n", help="Replicas (3f+1)."),
    faulty: int = typer.Option(
        1, "--faulty", help="Faulty replicas per run (crashed, restarted or Byzantine)."
    ),
    seed: int = typer.Option(0, "--seed", help="First seed; run k uses seed + k."),
    runs: int = typer.Option(100, "--runs", min=1, help="Number of seeded runs."),
    broken: bool = typer.Option(
        False, "--broken", help="Quorums of 2f instead of 2f+1 (must be caught)."
    ),
    forgeable: bool = typer.Option(
        False,
        "--forgeable",
        help="Replicas take any signature on a replica's own requests (must be caught).",
    ),
    op_bytes: int = typer.Option(
        0,
        "--op-bytes",
        min=0,
        help="Large requests: most ops about this many bytes, so the window cap binds (0: off).",
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Print every violation."),
) -> None:
    """Run seeded adversarial schedules; print runs, commits, safety violations and wrongful
    WINDOW_FULL refusals (a liveness bug); exit 1 on either."""
    import logging

    from pot.validator import messages, simulating

    logging.getLogger("pot.validator").setLevel(logging.CRITICAL)  # Byzantine runs log a lot
    if n < 4:
        raise typer.BadParameter(f"--n {n}: need at least 4 replicas (n = 3f+1, f >= 1)")
    f = (n - 1) // 3
    if not 0 <= faulty <= f:
        raise typer.BadParameter(f"--faulty {faulty}: with --n {n} it must be from 0 to f = {f}")
    if op_bytes > messages.MAX_OP_BYTES:
        raise typer.BadParameter(
            f"--op-bytes {op_bytes}: at most messages.MAX_OP_BYTES = {messages.MAX_OP_BYTES}"
        )
    started = time.monotonic()
    commits = violations = stalled = bad_runs = capped = wrongful = 0
    first_bad: int | None = None
    first_wrongful: int | None = None
    for k in range(runs):
        result = simulating.simulate(
            simulating.random_scenario(
                n=n,
                faulty=faulty,
                seed=seed + k,
                broken=broken,
                forgeable=forgeable,
                op_bytes=op_bytes,
            )
        )
        commits += result.commits
        capped += bool(result.window_full or result.padding)
        stalled += not result.live
        if result.wrongful_window_full:
            wrongful += result.wrongful_window_full
            first_wrongful = seed + k if first_wrongful is None else first_wrongful
        if result.violations:
            bad_runs += 1
            violations += len(result.violations)
            first_bad = seed + k if first_bad is None else first_bad
            if verbose:
                for v in result.violations:
                    typer.echo(f"seed {seed + k}: {v}")
    elapsed = time.monotonic() - started
    typer.echo(
        f"runs={runs} commits={commits} violations={violations} violating_runs={bad_runs} "
        f"stalled={stalled} seconds={elapsed:.1f}"
        + (f" window_capped_runs={capped}" if op_bytes else "")
        + f" wrongful_window_full={wrongful}"
        + (f" first_violating_seed={first_bad}" if first_bad is not None else "")
        + (f" first_wrongful_seed={first_wrongful}" if first_wrongful is not None else "")
    )
    if violations or wrongful:
        raise typer.Exit(1)
