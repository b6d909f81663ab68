# Sphinx configuration of the release notes (tox -e releasenotes, make
# docs; tests/docs builds them with warnings as errors). reno reads the
# notes in releasenotes/notes from the local git history.

extensions = [
    'openstackdocstheme',
    'reno.sphinxext',
]

openstackdocs_repo_name = 'nova-live-snapshot/nova-live-snapshot'
openstackdocs_bug_project = 'nova-live-snapshot'
openstackdocs_bug_tag = 'releasenotes'
openstackdocs_auto_name = False
openstackdocs_use_storyboard = False

project = 'nova-live-snapshot Release Notes'
copyright = 'nova-live-snapshot developers'

source_suffix = {'.rst': 'restructuredtext'}
master_doc = 'index'

pygments_style = 'native'
html_theme = 'openstackdocs'
