"""train page (being written)."""

import streamlit as st

import services

st.title("train")
services.sidebar()
