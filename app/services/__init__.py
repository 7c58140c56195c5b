"""The app's only cache layer: every `st.cache_*` wrapper around an attnviz call lives here.

Why one place: the pages stay thin (widgets in, one call, figures out), and the rules about shared
models are enforced once:
- models are `st.cache_resource` objects shared by every session of the process, loaded once each
  (``LOAD_COUNTS`` proves it), put in ``eval()`` with ``requires_grad_(False)`` and never mutated;
- whatever hooks or back-propagates a shared model (probes, CAMs) takes that model's lock inside the
  attnviz call itself (`attnviz.locks.model_lock`), so nothing here needs to lock;
- heavy results are `st.cache_data` keyed by (model id, image digest, method, ...), so changing a
  display-only setting never reruns a forward pass.
torch-heavy modules are imported inside the functions so that the first paint of a page does not
wait for them.
"""

from __future__ import annotations

from services.models import (  # noqa: F401
    COMPUTE_COUNTS,
    LOAD_COUNTS,
    PREFERRED_DEFAULTS,
    _count,
    activation_curves,
    activation_registry,
    chosen_models,
    default_model_ids,
    device_report,
    felu_minimum,
    load_model,
    sidebar,
    spec_params,
    versions,
    zoo_by_id,
    zoo_note,
    zoo_rows,
    zoo_rows_with_costs,
)
from services.pictures import (  # noqa: F401
    colormaps,
    compare,
    comparison_report,
    decode,
    explain_methods,
    gallery,
    inspect,
    model_layers,
    overlay_png,
    probe_images,
    usable_pictures,
    user_errors,
)
from services.runs import (  # noqa: F401
    check_archive,
    default_recipe,
    list_runs,
    run_status,
    run_summary,
    shipped_histories,
    start_run,
    trainable_specs,
    training_jobs,
)
from services.studies import (  # noqa: F401
    SANITY_METHODS,
    dead_units,
    excitation_profiles,
    intervention_effect,
    intervention_labels,
    intervention_sites,
    lgam_gate_usage,
    lgam_spatial_reduce,
    sanity_check,
)

