"""`trust_remote_code` stays off unless the spec sets it: every from_pretrained of a model or its tokenizer is told
which, explicitly (never left to a library's default). The loads are intercepted: no weights, no network."""

from __future__ import annotations

import pytest
import transformers

from workloads.models import build_model, load_tokenizer
from workloads.params import WorkloadParams

HUB_MODEL = "someone/model-with-its-own-code"


class Intercepted(Exception):
    """Ends a load once its arguments are seen."""


@pytest.fixture
def loads(monkeypatch) -> list[tuple[str, object]]:
    """(class, trust_remote_code) of every from_pretrained call; "unset" when the argument was left out."""
    calls: list[tuple[str, object]] = []

    def from_pretrained(cls, path, *args, **kwargs):
        calls.append((cls.__name__, kwargs.get("trust_remote_code", "unset")))
        raise Intercepted

    for auto in (transformers.AutoModel, transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        monkeypatch.setattr(auto, "from_pretrained", classmethod(from_pretrained))
    return calls


def load_all(params: WorkloadParams, *tokenizer_args: bool) -> None:
    for kind in ("lm", "classification"):
        with pytest.raises(Intercepted):
            build_model(params, kind, num_labels=2)
    with pytest.raises(Intercepted):
        load_tokenizer(params.model, *tokenizer_args)


def test_remote_code_is_refused_by_default(loads):
    params = WorkloadParams(model=HUB_MODEL)
    assert params.trust_remote_code is False
    load_all(params)
    assert loads == [("AutoModelForCausalLM", False), ("AutoModel", False), ("AutoTokenizer", False)]


def test_remote_code_is_trusted_when_the_spec_says_so(loads):
    params = WorkloadParams(model=HUB_MODEL, trust_remote_code=True)
    load_all(params, params.trust_remote_code)
    assert loads == [("AutoModelForCausalLM", True), ("AutoModel", True), ("AutoTokenizer", True)]
