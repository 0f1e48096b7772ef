"""kb — the search page (the page itself is kb.serve.page).  streamlit run app.py -- --index DIR"""

from kb.serve.page import run_page

run_page()
