# Sphinx configuration of the API reference in os-api-ref form (tox -e
# api-ref, make docs; tests/docs builds it with warnings as errors).
# The request and response samples in samples/ are checked against what
# the API answers by tests/nova/functional/test_api_answers.py.

extensions = [
    'os_api_ref',
    'openstackdocstheme',
]

openstackdocs_repo_name = 'nova-live-snapshot/nova-live-snapshot'
openstackdocs_bug_project = 'nova-live-snapshot'
openstackdocs_bug_tag = 'api-ref'
openstackdocs_auto_name = False
openstackdocs_use_storyboard = False

project = 'nova-live-snapshot API reference'
copyright = 'nova-live-snapshot developers'

source_suffix = {'.rst': 'restructuredtext'}
master_doc = 'index'

pygments_style = 'native'
html_theme = 'openstackdocs'
html_theme_options = {'sidebar_mode': 'toc'}
