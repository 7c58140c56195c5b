"""channel_attention page (being written)."""

import streamlit as st

import services

st.title("channel_attention")
services.sidebar()
