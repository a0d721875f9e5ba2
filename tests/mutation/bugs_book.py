"""Planted bugs for the book (docs site): each must make the named site tests fail."""

BUGS = [
    dict(
        name="book-embedded-page-in-english",
        path="src/bnlab/explain_page.py",
        old='.replace("__LANG__", lang)',
        new='.replace("__LANG__", "en")',
        tests=["tests/docs/test_site.py::test_the_set_b_page_is_embedded_in_the_tutorial"],
    ),
    dict(
        name="book-embedded-page-script-broken",
        path="src/bnlab/explain_page.py",
        old='payload = json.dumps(data, ensure_ascii=False).replace("<", "\\\\u003c")',
        new='payload = json.dumps(data, ensure_ascii=False).replace("<", "\\\\u003c")[:-1]',
        tests=["tests/docs/test_site.py::test_site_in_the_browser"],
    ),
]
