# Sphinx configuration of the nova-live-snapshot documentation (tox -e docs,
# make docs; tests/docs builds it with warnings as errors).
#
# Nothing here reaches the network: no intersphinx inventories are fetched
# (the machines that build these docs have no internet), and the theme's
# "last updated" dates come from the local git history.

extensions = [
    'openstackdocstheme',
]

# openstackdocstheme
openstackdocs_repo_name = 'nova-live-snapshot/nova-live-snapshot'
openstackdocs_bug_project = 'nova-live-snapshot'
openstackdocs_bug_tag = 'doc'
openstackdocs_auto_name = False
openstackdocs_use_storyboard = False

project = 'nova-live-snapshot'
copyright = 'nova-live-snapshot developers'

source_suffix = {'.rst': 'restructuredtext'}
master_doc = 'index'
# The benchmark report and raw figures are published as files, linked from
# benchmarks.rst, not built as pages.
exclude_patterns = ['bench/report.md']

pygments_style = 'native'
html_theme = 'openstackdocs'
html_static_path = []
