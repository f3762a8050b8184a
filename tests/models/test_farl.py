"""FaRL's ViT-B/16 tower: a file in FaRL's release format (written here from open_clip's ViT-B-16-quickgelu with random
weights, OpenAI CLIP's names, the text tower's keys included) gives open_clip's image-tower tokens; FaRL's pyramid;
position embeddings interpolated to 448x448; files that do not fit are one line naming the key."""
import pytest
import torch
import torch.nn.functional as F

from dml_csr.models.farl import CLIP_MEAN, CLIP_STD, build_farl_backbone

open_clip = pytest.importorskip("open_clip")

CLIP = ("RGB", CLIP_MEAN, CLIP_STD)


@pytest.fixture(scope="module")
def farl(tmp_path_factory):
    """(open_clip's model, the path of its weights in FaRL's format: {"state_dict": ...} plus the training fields)."""
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    sd = model.state_dict()
    assert any(k.startswith("transformer.resblocks.") for k in sd) and "token_embedding.weight" in sd  # text tower
    path = tmp_path_factory.mktemp("farl") / "FaRL-Base-Patch16-LAIONFace20M-ep16.pth"
    torch.save({"state_dict": sd, "epoch": 16}, path)
    return model, str(path), sd


def test_the_tower_gives_open_clips_tokens_and_farls_pyramid_at_224(farl):
    model, path, _ = farl
    ours = build_farl_backbone(32, path, (224, 224), CLIP).eval()
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        blocks = model.visual.forward_intermediates(x, indices=[3, 5, 7, 11], intermediates_only=True)
        theirs = blocks["image_intermediates"]  # (B, 768, 14, 14) after blocks 4, 6, 8 and 12
        tokens, maps = ours.token_maps(x), ours(x)
    assert (tokens[3] - theirs[3]).abs().max().item() <= 1e-5  # the final block
    assert all((a - b).abs().max().item() <= 1e-5 for a, b in zip(tokens, theirs))
    # FaRL's pyramid: x4 and x2 by transposed convs, block 8 as it is, block 12 max-pooled by 2
    assert [tuple(m.shape) for m in maps] == [(2, 768, 56, 56), (2, 768, 28, 28), (2, 768, 14, 14), (2, 768, 7, 7)]
    assert torch.equal(maps[2], tokens[2]) and torch.equal(maps[3], F.max_pool2d(tokens[3], 2))
    assert ours.channels == (768,) * 4


def test_at_448_the_position_embeddings_are_interpolated_bicubically(farl):
    _, path, sd = farl
    ours = build_farl_backbone(32, path, (448, 448), CLIP).eval()
    pe = sd["visual.positional_embedding"]  # (1 + 14 * 14, 768), learnt for 224x224
    grid = pe[1:].reshape(14, 14, 768).permute(2, 0, 1)[None]
    want = F.interpolate(grid, size=(28, 28), mode="bicubic", align_corners=False)[0].reshape(768, -1).t()
    assert ours.positional_embedding.shape == (1 + 28 * 28, 768)
    assert torch.equal(ours.positional_embedding[0], pe[0])  # the class token's own
    assert torch.allclose(ours.positional_embedding[1:], want, atol=1e-6)
    with torch.no_grad():
        maps = ours(torch.randn(1, 3, 448, 448))
    assert [m.shape[-1] for m in maps] == [112, 56, 28, 14]


def test_the_pretraining_heads_are_ignored_and_every_other_key_is_checked(farl, tmp_path):
    _, _, full = farl
    sd = {k: v for k, v in full.items() if k.startswith("visual.")}  # the files below need only the image tower
    extra = {"visual.mask_token": torch.zeros(1, 1, 768), "visual.lm_head.weight": torch.zeros(8192, 768),
             "visual.ln_lm.weight": torch.ones(768), "visual.lm_transformer.resblocks.0.ln_1.weight": torch.ones(768)}
    torch.save({"state_dict": {**sd, **extra}}, tmp_path / "mim.pth")
    build_farl_backbone(32, str(tmp_path / "mim.pth"), (224, 224), CLIP)
    missing = {k: v for k, v in sd.items() if k != "visual.transformer.resblocks.7.attn.in_proj_weight"}
    torch.save({"state_dict": missing}, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match=r"missing\.pth: .*missing: \['visual.transformer.resblocks.7.attn."
                                       r"in_proj_weight'\]") as m:
        build_farl_backbone(32, str(tmp_path / "missing.pth"))
    torch.save({"state_dict": {**sd, "visual.extra_head.weight": torch.zeros(2)}}, tmp_path / "extra.pth")
    with pytest.raises(KeyError, match=r"unexpected: \['visual.extra_head.weight'\]"):
        build_farl_backbone(32, str(tmp_path / "extra.pth"))
    torch.save({"state_dict": {**sd, "visual.proj": torch.zeros(768, 768)}}, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"'visual.proj' has shape \(768, 768\), the backbone expects \(768, 512\)") \
            as s:
        build_farl_backbone(32, str(tmp_path / "shape.pth"))
    assert "\n" not in str(m.value) + str(s.value)


def test_the_configs_convention_and_stride_must_be_farls(farl):
    _, path, _ = farl
    with pytest.raises(ValueError, match=r"^model.mean, model.std of this config .* differ from the input convention "
                                         r"of FaRL's weights \(CLIP's\)"):
        build_farl_backbone(32, path, convention=("RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    with pytest.raises(ValueError, match=r"model.output_stride = 16: farl_vit_b16 .* set model.output_stride: 32"):
        build_farl_backbone(16)


def test_the_registrys_farl_structure_is_clips_image_tower(farl):
    """The keys and shapes dml_csr.hub checks a downloaded FaRL file against are those of CLIP's ViT-B/16."""
    from dml_csr import hub

    _, _, sd = farl
    for name in ("farl_vit_b16_ep16", "farl_vit_b16_ep64"):
        assert {k: tuple(sd[k].shape) for k, _ in hub.WEIGHTS[name].structure} == dict(hub.WEIGHTS[name].structure)


def test_a_model_built_on_meta_and_filled_from_a_state_dict_equals_the_original():
    torch.manual_seed(0)
    net = build_farl_backbone(32, "", (64, 64)).eval()
    with torch.device("meta"):
        again = build_farl_backbone(32, "", (64, 64))
    again = again.to_empty(device="cpu").eval()
    again.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(x), again(x)))
