"""The rank search of collector/query/daystats.py: the percentiles of the union of sorted runs,
found without merging the largest run, equal nearest_rank over all the values sorted together."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.query.daystats import _ranks_of_runs
from collector.query.percentile import nearest_rank

values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-3, 3).map(float))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(values, max_size=40).map(sorted), min_size=1, max_size=5),
       st.lists(st.sampled_from([0.0001, 0.25, 0.5, 0.95, 0.99, 1.0]), min_size=1, max_size=3))
def test_ranks_of_runs_are_nearest_rank_of_all_values(runs, which):
    everything = sorted(v for run in runs for v in run)
    assert _ranks_of_runs(runs, which) == [nearest_rank(everything, p) for p in which]
