"""The generation engine against the naive reference: same tokens with the cache, in a ragged
batch and past the position window; stop rules, streaming and input validation."""

from __future__ import annotations

import pytest
import torch

from neuroq.model.engine import Engine, IncrementalDecoder, ModelRunner, StopReason
from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.packed import PackedLayered
from neuroq.model.sampling import SamplingParams
from neuroq.model.tokenizer import ASSISTANT_ID, BOS_ID, EOS_ID, USER_ID

# Small ops on 2 cores shared with other jobs: extra OpenMP threads only spin and slow tests down.
torch.set_num_threads(1)

SPECIALS = 6


class ByteTokenizer:
    """ids 0-5 are the special tokens, 6 + b is byte b; multi-byte characters span several ids,
    like SentencePiece's byte fallback."""

    vocab_size = SPECIALS + 256

    def encode(self, text: str) -> list[int]:
        return [SPECIALS + b for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - SPECIALS for i in ids if i >= SPECIALS).decode("utf-8", errors="replace")


def make_model(mode: str, max_seq_len: int = 48) -> NeuroQ:
    torch.manual_seed(0)
    shape = dict(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=2, max_seq_len=max_seq_len)
    vocab = ByteTokenizer.vocab_size
    if mode == "brain":
        return NeuroQ(NeuroQConfig.brain_defaults(vocab_size=vocab, num_neurons=6, **shape))
    return NeuroQ(NeuroQConfig(vocab_size=vocab, **shape))  # type: ignore[arg-type]


@pytest.fixture(params=["layered", "brain"])
def engine(request: pytest.FixtureRequest) -> Engine:
    return Engine(make_model(request.param), ByteTokenizer(), device="cpu")


def params(seed: int, **kw: object) -> SamplingParams:
    """Flat-ish sampling over a random model: many distinct tokens, so mismatches would show."""
    values: dict[str, object] = dict(
        max_length=30, temperature=1.0, top_k=0, top_p=1.0, repetition_penalty=1.5, seed=seed
    )
    values.update(kw)
    return SamplingParams(**values)  # type: ignore[arg-type]


PROMPTS = ["hi", "a longer prompt, with more bytes", "日本語", "x" * 12]


def test_prompt_format(engine: Engine) -> None:
    assert engine.prompt_ids("ab") == [BOS_ID, USER_ID, 6 + 97, 6 + 98, ASSISTANT_ID]


def test_cached_generation_equals_naive(engine: Engine) -> None:
    for seed, prompt in enumerate(PROMPTS):
        p = params(seed, stop_at_eos=False)
        (result,) = engine.generate([prompt], p)
        naive = engine.model.generate_naive(engine.prompt_ids(prompt), p)
        assert result.token_ids == naive
        assert result.num_tokens == 30 and result.stop_reason is StopReason.LENGTH


def test_the_naive_reference_runs_the_plain_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    """generate_naive never packs weights, so the engine is compared with the module path."""

    def refuse(*args: object) -> None:
        raise AssertionError("generate_naive used the packed weights")

    monkeypatch.setattr(PackedLayered, "__init__", refuse)
    model = make_model("layered")
    ids = model.generate_naive(
        [BOS_ID, USER_ID, 7, ASSISTANT_ID], params(0, max_length=5, stop_at_eos=False)
    )
    assert len(ids) == 5


def test_past_the_position_window_equals_naive() -> None:
    """With max_seq_len 16, prompt + 30 tokens outgrows the window; the engine then re-runs the
    last 16 tokens per step, exactly like the reference. A prompt longer than the window too."""
    engine = Engine(make_model("layered", max_seq_len=16), ByteTokenizer(), device="cpu")
    prompts = ["hello", "x" * 20]
    ps = [params(1, stop_at_eos=False), params(2, stop_at_eos=False)]
    batched = engine.generate(prompts, ps)
    for prompt, p, result in zip(prompts, ps, batched, strict=True):
        assert result.token_ids == engine.model.generate_naive(engine.prompt_ids(prompt), p)


def test_batched_equals_one_by_one(engine: Engine) -> None:
    """Ragged prompts, different seeds and settings in one batch; each row matches its solo run."""
    ps = [
        params(10, stop_at_eos=False),
        params(11, max_length=7, stop_at_eos=False),
        params(12, top_k=5, top_p=0.8, repetition_penalty=1.0, stop_at_eos=False),
        params(13, temp_min=0.5, temp_max=1.5, stop_at_eos=False),
    ]
    batched = engine.generate(PROMPTS, ps)
    for prompt, p, result in zip(PROMPTS, ps, batched, strict=True):
        (alone,) = engine.generate([prompt], p)
        assert result == alone
    assert [r.num_tokens for r in batched] == [30, 7, 30, 30]


def test_decode_steps_check_the_parameters_once_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache keeps the packed weights that filled it: the prefill checks the parameters,
    the decode steps do not; a cache of another model is never taken for this one's."""
    checks = 0
    is_current = PackedLayered.is_current

    def counted(self: PackedLayered, model: NeuroQ) -> bool:
        nonlocal checks
        checks += 1
        return is_current(self, model)

    monkeypatch.setattr(PackedLayered, "is_current", counted)
    engine = Engine(make_model("layered"), ByteTokenizer(), device="cpu")
    engine.generate(["hi"], params(0, max_length=20, stop_at_eos=False))  # packs the weights
    checks = 0
    (result,) = engine.generate(["hi"], params(1, max_length=20, stop_at_eos=False))
    assert result.num_tokens == 20 and checks == 1

    other = make_model("layered").eval()
    with torch.no_grad():
        other.lm_head.weight.mul_(2.0)
    idx = torch.tensor([engine.prompt_ids("hi")])
    other_runner = ModelRunner(other)
    with torch.inference_mode():
        cache = engine.model.make_cache(1, 8)
        engine.runner(idx, cache)  # filled by engine.model's packed weights
        cache2 = other.make_cache(1, 8)
        other_runner(idx, cache2)
        step = idx[:, -1:]
        mine = other_runner(step, cache2)
        borrowed = other_runner(step, cache)  # engine.model's cache, other's weights
    torch.testing.assert_close(borrowed, mine, rtol=0, atol=1e-5)


def test_seed_reproduces_and_differs(engine: Engine) -> None:
    a = engine.generate(["same"], params(5))[0]
    b = engine.generate(["same"], params(5))[0]
    c = engine.generate(["same"], params(6))[0]
    assert a == b
    assert a.token_ids != c.token_ids


def force_next_token(model: NeuroQ, token: int) -> None:
    """Make `token` the overwhelming choice at every step: the final LayerNorm outputs a constant
    vector and only that token's head row responds to it."""
    with torch.no_grad():
        model.ln_f.weight.zero_()
        model.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[token].fill_(5.0)


@pytest.mark.parametrize(
    ("token", "reason"), [(EOS_ID, StopReason.EOS), (USER_ID, StopReason.USER)]
)
def test_stops_on_eos_and_user(token: int, reason: StopReason) -> None:
    model = make_model("layered")
    force_next_token(model, token)
    engine = Engine(model, ByteTokenizer(), device="cpu")
    (result,) = engine.generate(["hello"], params(0))
    assert result.token_ids == [] and result.text == "" and result.stop_reason is reason
    # With the stop rules off the same token is just generated.
    (result,) = engine.generate(["hello"], params(0, max_length=4, stop_at_eos=False))
    assert result.token_ids == [token] * 4 and result.stop_reason is StopReason.LENGTH


def test_stop_in_a_batch_leaves_other_rows_running() -> None:
    model = make_model("layered")
    force_next_token(model, EOS_ID)
    engine = Engine(model, ByteTokenizer(), device="cpu")
    stops, runs = engine.generate(
        ["a", "bb"], [params(0), params(1, max_length=5, stop_at_eos=False)]
    )
    assert stops.stop_reason is StopReason.EOS and stops.num_tokens == 0
    assert runs.token_ids == [EOS_ID] * 5


def test_reply_text_is_the_decoded_reply_only() -> None:
    model = make_model("layered")
    force_next_token(model, 6 + ord("z"))
    engine = Engine(model, ByteTokenizer(), device="cpu")
    (result,) = engine.generate(["prompt text"], params(0, max_length=3, repetition_penalty=1.0))
    assert result.text == "zzz"


def test_stream_pieces_add_up_to_the_reply(engine: Engine) -> None:
    for seed in range(3):
        p = params(seed, max_length=40, stop_at_eos=False)
        stream = engine.stream("stream me", p)
        pieces = list(stream)
        (result,) = engine.generate(["stream me"], p)
        assert "".join(pieces) == result.text
        assert stream.result == result
        assert len(pieces) > 1


def test_incremental_decoder_waits_for_whole_characters() -> None:
    tok = ByteTokenizer()
    text = "héllo 世界!"
    decoder = IncrementalDecoder(tok)
    pieces = [decoder.push(i) for i in tok.encode(text)]
    pieces.append(decoder.finish())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    assert "世" in pieces  # emitted as soon as its third byte arrived


@pytest.mark.parametrize("prompt", ["", "   ", None, 3])
def test_empty_or_invalid_prompt_is_rejected(engine: Engine, prompt: object) -> None:
    with pytest.raises(ValueError, match=r"^prompt:"):
        engine.generate([prompt], params(0))  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^prompt:"):
        engine.stream(prompt, params(0))  # type: ignore[arg-type]


def test_params_must_match_prompts(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"^params:"):
        engine.generate(["a", "b"], [params(0)])
    with pytest.raises(ValueError, match=r"^prompts:"):
        engine.generate("a", params(0))
    assert engine.generate([], params(0)) == []


def test_tokenizer_larger_than_model_is_rejected() -> None:
    model = NeuroQ(
        NeuroQConfig(vocab_size=100, embed_dim=8, hidden_dim=8, num_heads=2, num_layers=1)
    )
    with pytest.raises(ValueError, match=r"^vocab_size:"):
        Engine(model, ByteTokenizer(), device="cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_naive_on_cuda() -> None:
    engine = Engine(make_model("layered"), ByteTokenizer(), device="cuda")
    p = params(3, stop_at_eos=False)
    (result,) = engine.generate(["gpu"], p)
    assert result.token_ids == engine.model.generate_naive(engine.prompt_ids("gpu"), p)
