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

#: HTTP dates (as in ``Retry-After``), many of them out of any calendar's range: years from far
#: before year 1 to far past 9999, odd offsets, days that do not exist.
http_dates = st.builds(
    "{}, {:02d} {} {} {:02d}:{:02d}:{:02d} {}".format,
    st.sampled_from(["Mon", "Tue", "Sun", "Xyz"]),
    st.integers(0, 40),
    st.sampled_from(["Jan", "Feb", "Dec", "Foo"]),
    st.integers(-(10**12), 10**12) | st.integers(9990, 10010) | st.integers(0, 100),
    st.integers(0, 30),
    st.integers(0, 70),
    st.integers(0, 70),
    st.sampled_from(["GMT", "UTC", "+0000", "-2400", "+9999", "-0800", "EST", ""]),
)
