"""lgam page (being written)."""

import streamlit as st

import services

st.title("lgam")
services.sidebar()
