# Device tests for upcert.claim's own checks (the flow itself runs against the stand-in in
# tests/e2e/test_claim_e2e.py): the "claim" config section, and that a board without a claim on
# its flash has nothing to do.
from checks import eq, raises
from upcert import claim
from upcert.errors import ConfigError


def _s(section):
    return claim.settings({"claim": section})


def test_settings_defaults_and_values():
    eq(_s({}), {"template": "upcert-claim", "parameters": {}}, "defaults")
    eq(_s({"template": "t_1-x", "parameters": {"Batch": "b7"}}),
       {"template": "t_1-x", "parameters": {"Batch": "b7"}}, "given")
    eq(_s({"template": "x" * 36})["template"], "x" * 36, "36 characters")


def test_settings_refusals():
    for bad in ([], "upcert-claim", {"template": None}, {"template": ""}, {"template": "a/b"},
                {"template": "x" * 37}, {"parameters": {"Batch": 1}}, {"parameters": []},
                {"templat": "x"}):
        raises(ConfigError, _s, bad, contains="config 'claim' must be")


def test_no_claim_on_the_flash_means_nothing_to_do():
    import os

    try:
        os.stat(claim.CLAIM_CERT)
        raise AssertionError("the test board has a claim: %s" % claim.CLAIM_CERT)
    except OSError:
        pass
    eq(claim.pending(), False, "pending")
    # run() returns at once: no store, clock or network is touched
    eq(claim.run({"claim": {}}, None, None, None, None, print), None, "run")
