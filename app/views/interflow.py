"""interflow page (being written)."""

import streamlit as st

import services

st.title("interflow")
services.sidebar()
