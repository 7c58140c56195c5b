"""The Sanity checks page and the interventions panel of the module pages, through AppTest: they render, the
widgets drive the results, and the shared (cached) models stay exactly as they were loaded."""

from __future__ import annotations

import pytest
import torch


def _run(app, page: str):
    app.switch_page(page).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    return app


def _state(model_id: str):
    import services

    model, _ = services.load_model(model_id)
    return model, {k: v.clone() for k, v in model.state_dict().items()}


def _same(model, state) -> bool:
    now = model.state_dict()
    hooks = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    return not hooks and all(torch.equal(state[k], now[k]) for k in state)


@pytest.mark.slow  # re-initialises a model five times and recomputes five methods (seconds on 2 cores)
def test_sanity_page_shows_the_strip_the_curves_and_a_reading(app):
    at = _run(app, "views/sanity.py")
    import services

    model_id = at.selectbox(key="sanity_model").value
    model, state = _state(model_id)
    strip = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert strip[1].startswith("trained") and any("random down to stem" in c for c in strip)
    assert len(strip) == 1 + 6  # the picture, then trained + 5 randomisation steps of a ResNet-20
    reading = [m.value for m in at.markdown if m.value.startswith("**Reading.**")]
    assert reading and "Rank correlation of |map|" in reading[0]
    assert len(at.get("plotly_chart")) >= 1
    before = list(strip)
    at.selectbox(key="sanity_method").set_value("guided_backprop").run()
    after = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert not at.exception and len(after) == len(before)
    counts = services.COMPUTE_COUNTS["sanity"]
    at.radio(key="sanity_metric").set_value("ssim").run()  # display only: no new randomisation
    assert services.COMPUTE_COUNTS["sanity"] == counts
    at.radio(key="sanity_mode").set_value("independent").run()
    assert not at.exception
    captions = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert any(c.startswith("only layer2 random") for c in captions)
    assert _same(model, state)  # the cached shared model was never modified


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_channel_attention_page_intervention_changes_the_prediction(app):
    at = _run(app, "views/channel_attention.py")
    model_id = at.selectbox(key="se_iv_model").value
    model, state = _state(model_id)
    at.selectbox(key="se_iv_site").set_value("layer2.0.attn").run()
    at.selectbox(key="se_iv_method").set_value("channel_zero_topk").run()
    assert not at.exception and not at.error
    k = at.number_input(key="se_iv_k")
    assert k.max == 32  # layer2 has 32 channels: k cannot leave its range
    k.set_value(32).run()  # every channel's weight zeroed: the block's residual branch is switched off
    captions = [c.value for c in at.caption if "prediction changed for" in c.value]
    assert captions and "zero the 32 most-weighted channels" in captions[0]
    pictures = [img.caption for e in at.get("image") for img in e.proto.imgs]
    assert any(c.startswith("before ·") for c in pictures) and any(c.startswith("after ·") for c in pictures)
    at.selectbox(key="se_iv_method").set_value("channel_class_mean").run()
    assert not at.exception and not at.error
    assert _same(model, state)


@pytest.mark.slow
def test_lgam_and_interflow_pages_offer_their_own_interventions(app):
    at = _run(app, "views/lgam.py")
    assert set(at.selectbox(key="lgam_iv_method").options) == {"spatial mask -> 1 (every position alike)",
                                                                 "spatial mask -> its mean over the picture"}
    at = _run(app, "views/interflow.py")
    at.selectbox(key="interflow_iv_method").set_value("branch_only").run()
    at.selectbox(key="interflow_iv_branch").set_value(0).run()
    assert not at.exception and not at.error
    captions = [c.value for c in at.caption if "prediction changed for" in c.value]
    assert captions and "branch 1 alone" in captions[0]


@pytest.mark.slow  # runs models
def test_shipped_entries_whose_spec_has_options_are_the_defaults_and_fill_their_page(app):
    import services

    lgam = next(r for r in services.zoo_rows() if r["name"] == "resnet20-lgam" and r["shipped"])
    assert lgam["spec"] != "resnet20-lgam"  # the zoo's LGAM carries options (zero_init_residual, spatial_reduce)
    at = app.switch_page("views/lgam.py").run()
    assert not at.exception and lgam["id"] in at.session_state["models"]  # chosen by default, by zoo name
    assert [h.value for h in at.header][:1] == ["resnet20-lgam"]
    assert not any("no LGAM model" in w.value for w in at.warning)
    # the caption says how this checkpoint pools eq. (5); the first shipped LGAM (a channel sum) is negative
    # everywhere at most sites for this picture: flat at 0.5, said as such
    caption = next(c.value for c in at.caption if c.value.startswith("M_spat of every LGAM site"))
    if "spatial_reduce=mean" in lgam["spec"]:
        assert "channel *mean* instead of the paper's sum" in caption and "*sum* over all channels" not in caption
    else:
        assert "*sum* over all channels" in caption and "channel *mean*" not in caption
        assert "sites are flat for this picture" in caption and "of them at exactly 0.5" in caption, caption
        assert "eq. (5)'s channel sum is negative" in caption
    # over the sample set: the table's numbers are the library's for the same batch
    usage = services.lgam_gate_usage(lgam["id"], lgam["weights_sha256"])
    table = next(d.value for d in at.dataframe if "map off" in d.value.columns)
    assert list(table["site"]) == [site.removesuffix(".attn") for site in usage.per_site]
    assert list(table["map off"]) == [u.spatial_states["off"] for u in usage.per_site.values()]
    summary = [c.value for c in at.caption if c.value.startswith(f"Over {usage.pictures} sample test pictures")]
    assert summary and f"{len(usage.frozen_sites)} of {len(usage.per_site)} sites" in summary[0], summary
    assert f"{usage.dead_channel_gates} of {usage.channel_gates} channel gates" in summary[0], summary
    at.session_state["models"] = [r["id"] for r in services.zoo_rows() if r["name"] == "resnet20"]
    at.run()  # no LGAM chosen: the page falls back to the zoo's own, found by its name
    assert [h.value for h in at.header][:1] == ["resnet20-lgam"]
