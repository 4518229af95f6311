import asyncio

from longform.build.admission import run_until_accepted


def _run(verdicts, target, max_active):
    started_order, peak, active = [], [0], [0]

    async def work(i):
        started_order.append(i)
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.01 * (1 + i % 3))
        active[0] -= 1
        return verdicts[i]

    result = asyncio.run(run_until_accepted(range(len(verdicts)), work, target=target, max_active=max_active))
    return result, started_order, peak[0]


def test_stops_at_exactly_the_target_and_never_overshoots():
    verdicts = [True, False] * 20
    (accepted, started), order, peak = _run(verdicts, target=5, max_active=3)
    assert accepted == 5
    assert order == list(range(started))            # candidates start in order
    assert peak <= 3
    assert sum(verdicts[i] for i in order) == 5      # no accepted candidate beyond the target


def test_runs_out_of_candidates_within_the_budget():
    (accepted, started), _, _ = _run([False, True, False], target=5, max_active=2)
    assert (accepted, started) == (1, 3)


def test_everything_accepted_needs_no_extra_candidate():
    (accepted, started), _, _ = _run([True] * 10, target=4, max_active=8)
    assert (accepted, started) == (4, 4)
