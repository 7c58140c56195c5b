"""attnviz app entry point: page setup and navigation only (`make app`).

Each page lives in `app/views/<name>.py`; to add one, add a line below. The sidebar (the model choice
shared by every page, and the device line) is drawn here once; pages read the choice with
`services.chosen_models()`. Heavy imports (torch) happen
inside `app/services/` when a page first needs them, so the first paint stays fast.
"""

import streamlit as st

import profiling
import services

st.set_page_config(page_title="attnviz", page_icon=":material/visibility:", layout="wide")

page = st.navigation(
    {
        "Compare": [
            st.Page("views/zoo.py", title="Zoo", icon=":material/grid_view:", default=True),
            st.Page("views/inspect_image.py", title="Inspect an image", icon=":material/image_search:"),
            st.Page("views/sanity.py", title="Sanity checks", icon=":material/fact_check:"),
        ],
        "Modules": [
            st.Page("views/channel_attention.py", title="Channel attention (SE)", icon=":material/equalizer:"),
            st.Page("views/lgam.py", title="LGAM", icon=":material/stacks:"),
            st.Page("views/interflow.py", title="Interflow", icon=":material/merge_type:"),
            st.Page("views/activations.py", title="Activations", icon=":material/show_chart:"),
        ],
        "Run": [
            st.Page("views/train.py", title="Train", icon=":material/model_training:"),
            st.Page("views/experiments.py", title="Experiments", icon=":material/science:"),
        ],
        "Learn": [
            st.Page("views/about.py", title="About", icon=":material/menu_book:"),
        ],
    }
)
with profiling.rerun(page.title):  # off unless ATTNVIZ_PROFILE names a file (benchmarks/app_load.py)
    with profiling.phase("sidebar"):
        services.sidebar()  # the shared model choice and device line, drawn once for every page
    page.run()
