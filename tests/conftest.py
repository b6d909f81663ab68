# tests/nova holds Nova-fixture (testtools) suites; they run under stestr
# (make nova-functional, make nova-live), which Nova's test base needs.
collect_ignore = ['nova']
