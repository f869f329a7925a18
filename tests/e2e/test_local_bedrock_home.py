"""`quarry local up` gives the local Bedrock a home inside the stack's own, so its saved jobs and
custom models never mix with another stack's or a test server's."""
from __future__ import annotations


def test_the_local_bedrock_keeps_its_state_under_the_stacks_home(stack):
    state = stack.config.home / "bedrock" / "state"

    assert state.is_dir()
