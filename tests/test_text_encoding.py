"""clip_skip and 75/150/225-token chunking with sd-scripts' semantics, on the tiny CLIP."""

from __future__ import annotations

import pytest
import torch

from tagging.errors import UserError
from trainer.models import load_sd1
from trainer.text_encoding import check_text_settings, encode_prompts, encode_tokens, tokenize
from trainer.tiny import make_tiny_sd

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_sd1(make_tiny_sd(tmp_path_factory.mktemp("te") / "sd"))


def _long_prompt(tok, n_tokens):
    words = ["long", "hair", "blue", "eyes", "smile", "dress"]
    text, i = [], 0
    while len(tok(" ".join(text)).input_ids) - 2 < n_tokens:
        text.append(words[i % len(words)])
        i += 1
    return " ".join(text)


def test_chunks_carry_bos_and_last_id_and_cover_the_middle(bundle):
    tok = bundle.tokenizer
    text = _long_prompt(tok, 180)
    full = tok(text, padding="max_length", truncation=True, max_length=227, return_tensors="pt").input_ids[0]
    ids = tokenize(tok, [text], 225)
    assert ids.shape == (1, 3, 77)
    for c in range(3):
        assert ids[0, c, 0] == tok.bos_token_id
        assert ids[0, c, -1] == full[-1]
        assert torch.equal(ids[0, c, 1:76], full[1 + 75 * c : 76 + 75 * c])
    assert tokenize(tok, ["a"], 150).shape == (1, 2, 77)
    assert tokenize(tok, ["a", "b"], 75).shape == (2, 1, 77)


def test_225_states_are_bos_three_windows_and_eos(bundle):
    tok, te = bundle.tokenizer, bundle.text_encoder
    text = _long_prompt(tok, 180)
    with torch.no_grad():
        ids = tokenize(tok, [text], 225)
        states = encode_tokens(te, ids)
        per_chunk = te(ids[0]).last_hidden_state  # (3, 77, D) encoded separately
    assert states.shape == (1, 227, te.config.hidden_size)
    assert torch.allclose(states[0, 0], per_chunk[0, 0])
    for c in range(3):
        assert torch.allclose(states[0, 1 + 75 * c : 76 + 75 * c], per_chunk[c, 1:76], atol=1e-6)
    assert torch.allclose(states[0, -1], per_chunk[2, -1])


def test_short_prompt_first_window_matches_75_mode(bundle):
    with torch.no_grad():
        a = encode_prompts(bundle.tokenizer, bundle.text_encoder, ["1girl, smile"], max_token_length=75)
        b = encode_prompts(bundle.tokenizer, bundle.text_encoder, ["1girl, smile"], max_token_length=225)
    assert a.shape[1] == 77 and b.shape[1] == 227
    assert torch.allclose(a[0, :76], b[0, :76], atol=1e-6)


def test_clip_skip_is_penultimate_state_then_final_norm(bundle):
    tok, te = bundle.tokenizer, bundle.text_encoder
    with torch.no_grad():
        ids = tokenize(tok, ["1girl, solo"])
        out = te(ids[:, 0], output_hidden_states=True)
        skip1 = encode_tokens(te, ids, clip_skip=1)
        skip2 = encode_tokens(te, ids, clip_skip=2)
        none = encode_tokens(te, ids, clip_skip=None)
    assert torch.allclose(skip1, out.last_hidden_state) and torch.allclose(none, skip1)
    assert torch.allclose(skip2, te.final_layer_norm(out.hidden_states[-2]), atol=1e-6)
    assert not torch.allclose(skip2, skip1, atol=1e-3)


def test_bad_settings_are_user_errors():
    check_text_settings(2, 225)
    with pytest.raises(UserError, match="max_token_length = 100"):
        check_text_settings(None, 100)
    with pytest.raises(UserError, match="clip_skip = 13"):
        check_text_settings(13, 75, num_layers=12)
