"""berth's Streamlit check app: a title, a text input, and its value echoed."""

import streamlit as st

st.title("berth streamlit demo")
name = st.text_input("Your name", value="world", key="name")
st.write(f"Hello, {name}!")
count = st.slider("Count", min_value=1, max_value=10, value=3, key="count")
st.write(f"Count squared is {count * count}")
