# tests/nova holds Nova-fixture (testtools) suites; they run under stestr
# (make nova-functional, make nova-live), which Nova's test base needs.
# tests/cloud runs against the test cloud (make cloud-test), which brings it
# up first.
collect_ignore = ['nova', 'cloud']
