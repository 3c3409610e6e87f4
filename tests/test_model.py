import math

import pytest
import torch
import torch.nn.functional as F

from models import GPT, GPTConfig, estimate_mfu
from models.rope import RotaryEmbedding

VOCAB = 17


def make_model(seed: int = 0, **overrides) -> GPT:
    settings = dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32)
    settings.update(overrides)
    torch.manual_seed(seed)
    return GPT(GPTConfig(**settings)).eval()


def random_tokens(batch: int = 3, length: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, length), generator=generator)


@pytest.mark.parametrize("positions", ["rope", "learned"])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_output_shapes(positions, attention):
    model = make_model(positions=positions, attention=attention)
    idx = random_tokens(batch=3, length=10)
    assert model(idx).shape == (3, 10, VOCAB)
    assert model.hidden_states(idx).shape == (3, 10, 32)
    predict_at = torch.tensor([0, 7, 13, 29])
    assert model(idx, predict_at=predict_at).shape == (4, VOCAB)


def test_predict_at_matches_full_logits():
    model = make_model()
    idx = random_tokens(batch=3, length=12)
    full = model(idx)
    predict_at = torch.tensor([35, 0, 12, 13, 5])  # unordered, crosses batch rows
    picked = model(idx, predict_at=predict_at)
    expected = full.reshape(-1, VOCAB)[predict_at]
    torch.testing.assert_close(picked, expected, rtol=1e-5, atol=1e-5)
    # Flat index b * T + t really means row b, position t.
    torch.testing.assert_close(picked[0], full[2, 11], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="1-D"):
        model(idx, predict_at=predict_at.view(1, -1))


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_causal_logits_ignore_future_tokens(positions):
    model = make_model(attention="causal", positions=positions)
    idx = random_tokens(batch=2, length=12)
    t = 5
    changed = idx.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
    before, after = model(idx), model(changed)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, t + 1 :], after[:, t + 1 :], atol=1e-4)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_bidirectional_logits_see_future_tokens(positions):
    model = make_model(attention="bidirectional", positions=positions)
    idx = random_tokens(batch=2, length=12)
    t = 5
    changed = idx.clone()
    changed[:, t + 1 :] = (changed[:, t + 1 :] + 1) % VOCAB
    before, after = model(idx), model(changed)
    for position in range(t + 1):
        assert not torch.allclose(before[:, position], after[:, position], atol=1e-4)


def test_rope_makes_model_position_aware():
    # Without any positional signal a bidirectional transformer is permutation-equivariant;
    # RoPE must break that symmetry.
    model = make_model(attention="bidirectional", positions="rope")
    idx = random_tokens(batch=1, length=12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3))
    permuted_then_run = model(idx[:, perm])
    run_then_permuted = model(idx)[:, perm]
    assert not torch.allclose(permuted_then_run, run_then_permuted, atol=1e-4)


def test_rope_scores_depend_only_on_relative_position():
    head_dim, length = 8, 12
    rope = RotaryEmbedding(head_dim, max_seq_len=length)
    torch.manual_seed(0)
    q_vec, k_vec = torch.randn(head_dim), torch.randn(head_dim)
    q = q_vec.expand(1, 1, length, head_dim)
    k = k_vec.expand(1, 1, length, head_dim)
    q_rot, k_rot = rope(q, k)
    scores = q_rot[0, 0] @ k_rot[0, 0].T  # (length, length)
    # Same offset (m - n = 2) at different absolute positions gives the same score.
    torch.testing.assert_close(scores[5, 3], scores[9, 7], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scores[2, 2], q_vec @ k_vec, rtol=1e-5, atol=1e-5)
    # Position 0 is left unrotated; NeoX layout rotates dim i against dim i + head_dim / 2.
    torch.testing.assert_close(q_rot[0, 0, 0], q_vec)
    angle = 1.0  # position 1, frequency index 0 has inv_freq 1
    half = head_dim // 2
    expected0 = q_vec[0] * math.cos(angle) - q_vec[half] * math.sin(angle)
    torch.testing.assert_close(q_rot[0, 0, 1, 0], expected0, rtol=1e-5, atol=1e-6)


def test_rope_versus_learned_positions():
    rope_model = make_model(positions="rope")
    learned_model = make_model(positions="learned")
    assert "wpe" not in rope_model.transformer
    assert "wpe" in learned_model.transformer
    assert not any("wpe" in key for key in rope_model.state_dict())
    wpe_size = 16 * 32
    assert learned_model.num_params(exclude_positional=False) == learned_model.num_params() + wpe_size
    assert learned_model.num_params(exclude_positional=False) == rope_model.num_params() + wpe_size
    assert rope_model.num_params(exclude_positional=False) == rope_model.num_params()
    # RoPE caches are derived from the config, so they never reach a checkpoint.
    assert not any("cos" in key or "sin" in key for key in rope_model.state_dict())


def test_trunk_keys_and_tied_weights():
    model = make_model()
    keys = model.state_dict().keys()
    assert all(key.startswith("transformer.") or key == "lm_head.weight" for key in keys)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()
    counted = sum(p.numel() for p in model.parameters())
    assert model.num_params() == counted
    unique_storages = {p.data_ptr() for p in model.parameters()}
    assert len(unique_storages) == len(list(model.parameters()))


def test_param_groups():
    model = make_model(bias=True, positions="learned")
    model.transformer.h[0].attn.c_attn.weight.requires_grad_(False)
    model.transformer.h[0].ln_1.bias.requires_grad_(False)
    groups = {group["name"]: group for group in model.param_groups(weight_decay=0.1)}
    assert set(groups) == {"decay", "no_decay"}
    assert groups["decay"]["weight_decay"] == 0.1
    assert groups["no_decay"]["weight_decay"] == 0.0

    decay_ids = {id(p) for p in groups["decay"]["params"]}
    no_decay_ids = {id(p) for p in groups["no_decay"]["params"]}
    grouped = groups["decay"]["params"] + groups["no_decay"]["params"]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len({id(p) for p in grouped})  # no parameter twice
    assert {id(p) for p in grouped} == {id(p) for p in trainable}

    for name, param in model.named_parameters():
        if not param.requires_grad:
            assert id(param) not in decay_ids | no_decay_ids, name
        elif param.dim() >= 2:
            assert id(param) in decay_ids, name
        else:
            assert id(param) in no_decay_ids, name
    assert id(model.transformer.ln_f.weight) in no_decay_ids
    assert id(model.transformer.h[1].ln_1.weight) in no_decay_ids
    assert id(model.transformer.wte.weight) in decay_ids
    # The groups are usable as-is.
    torch.optim.AdamW(model.param_groups(weight_decay=0.1), lr=1e-3)


def test_init_statistics():
    n_layer = 4
    model = make_model(n_layer=n_layer, n_embd=64, n_head=4, bias=True)
    proj = torch.cat([p.flatten() for name, p in model.named_parameters() if name.endswith("c_proj.weight")])
    expected = 0.02 / math.sqrt(2 * n_layer)
    assert abs(proj.std().item() - expected) / expected < 0.05
    fc = torch.cat([block.mlp.c_fc.weight.flatten() for block in model.transformer.h])
    assert abs(fc.std().item() - 0.02) / 0.02 < 0.05
    assert abs(model.transformer.wte.weight.std().item() - 0.02) / 0.02 < 0.1
    for name, param in model.named_parameters():
        if name.endswith(".bias"):
            assert torch.all(param == 0), name
        if name.startswith("transformer.h.") and ("ln_" in name) and name.endswith(".weight"):
            assert torch.all(param == 1), name


def test_same_seed_gives_identical_init():
    a, b = make_model(seed=123), make_model(seed=123)
    c = make_model(seed=124)
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.transformer.wte.weight, c.transformer.wte.weight)


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_crop_block_size(positions):
    model = make_model(positions=positions, block_size=16)
    idx = random_tokens(batch=2, length=8)
    before = model(idx)
    model.crop_block_size(8)
    assert model.config.block_size == 8
    if positions == "learned":
        assert model.transformer.wpe.weight.shape == (8, 32)
    after = model(idx)
    assert after.shape == (2, 8, VOCAB)
    torch.testing.assert_close(before, after)  # cropping keeps the first positions intact
    with pytest.raises(ValueError, match="block_size"):
        model(random_tokens(batch=2, length=9))
    with pytest.raises(ValueError, match="block_size"):
        model.crop_block_size(32)


def test_input_longer_than_block_size_raises():
    model = make_model(block_size=8)
    with pytest.raises(ValueError, match="block_size"):
        model(random_tokens(batch=1, length=9))


def test_config_validation_and_architecture():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=VOCAB, n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="even"):
        GPTConfig(vocab_size=VOCAB, n_embd=12, n_head=4)  # head dim 3
    GPTConfig(vocab_size=VOCAB, n_embd=12, n_head=4, positions="learned")  # odd head dim is fine
    with pytest.raises(ValueError, match="attention"):
        GPTConfig(vocab_size=VOCAB, attention="sideways")
    config = GPTConfig(vocab_size=VOCAB, dropout=0.1)
    arch = config.architecture()
    assert set(arch) == {
        "vocab_size",
        "block_size",
        "n_layer",
        "n_head",
        "n_embd",
        "bias",
        "attention",
        "positions",
        "head",
        "num_classes",
    }
    assert arch == GPTConfig(vocab_size=VOCAB, dropout=0.3, rope_base=500.0).architecture()
    assert arch != GPTConfig(vocab_size=VOCAB, n_layer=5).architecture()


@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_adamw_steps_reduce_loss(attention):
    model = make_model(attention=attention, dropout=0.1).train()
    idx = random_tokens(batch=4, length=16)
    targets = random_tokens(batch=4, length=16, seed=2)
    optimizer = torch.optim.AdamW(model.param_groups(weight_decay=0.01), lr=1e-2)
    losses = []
    for _ in range(30):
        logits = model(idx)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(VOCAB), rel=0.1)  # near-uniform at init
    assert losses[-1] < 0.5 * losses[0]


def test_predict_at_backward_reaches_every_parameter():
    model = make_model().train()
    idx = random_tokens(batch=2, length=8)
    predict_at = torch.tensor([3, 12])
    loss = model(idx, predict_at=predict_at).logsumexp(-1).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_flops_and_mfu():
    model = make_model(n_layer=2, n_head=2, n_embd=32, block_size=16, positions="learned")
    n = model.num_params()  # excludes wpe
    expected = 6 * n + 12 * 2 * 2 * 16 * 16
    assert model.estimate_flops_per_token() == pytest.approx(expected)
    # 1e9 FLOPs/token at 1e5 tokens/s is 1e14 FLOP/s: 32% of a 312.5 TFLOP/s peak.
    assert estimate_mfu(1e9, 1e5, 312.5e12) == pytest.approx(0.32)
    assert estimate_mfu(0.0, 1e5, 1e12) == 0.0
    with pytest.raises(ValueError):
        estimate_mfu(1e9, 1e5, 0.0)


def test_token_classifier_and_sequence_scorer_heads():
    idx = random_tokens(batch=3, length=16)
    classifier = GPT(
        GPTConfig(
            vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=32, head="token_classifier", num_classes=3
        )
    )
    assert classifier(idx).shape == (3, 16, 3)
    assert classifier(idx, predict_at=torch.tensor([0, 17])).shape == (2, 3)
    scorer = GPT(GPTConfig(vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=32, head="sequence_scorer"))
    scores = scorer(idx)
    assert scores.shape == (3,) and ((scores > 0) & (scores < 1)).all()
    # the score reads position 0 only through attention: changing later tokens changes it (bidirectional)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % VOCAB
    assert not torch.allclose(scorer(changed), scores)
    for model in (classifier, scorer):
        trunk, head = model.trunk_parameters(), model.head_parameters()
        assert len(trunk) + len(head) == len(list(model.parameters())) and head
        assert not hasattr(model, "lm_head")
