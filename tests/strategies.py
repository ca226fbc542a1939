"""Hypothesis strategies shared by the property tests: JSON values, and objects shaped like
Baidu's answers."""

from __future__ import annotations

from hypothesis import strategies as st

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
baidu_keys = st.sampled_from(
    ["openid", "session_key", "error", "error_description", "errno", "error_code", "errmsg", "msg"]
)
#: JSON objects whose keys are mostly the ones Baidu's answers use, with any values.
baidu_like = st.dictionaries(baidu_keys | st.text(max_size=6), json_values, max_size=6)
