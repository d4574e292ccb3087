"""The suite's own guards: shadowed-test detection."""

from support import shadowed_tests


def test_a_test_defined_twice_is_found():
    src = "def test_a():\n    pass\n\ndef test_b():\n    pass\n\ndef test_a():\n    pass\n"
    assert shadowed_tests(src) == ["test_a (lines 1 and 7)"]


def test_shadowing_inside_a_class_and_by_assignment_is_found():
    src = (
        "class TestX:\n"
        "    def test_m(self): pass\n"
        "    def test_m(self): pass\n"
        "def test_f(): pass\n"
        "test_f = None\n"
    )
    assert shadowed_tests(src) == ["TestX.test_m (lines 2 and 3)", "test_f (lines 4 and 5)"]


def test_distinct_names_and_helpers_pass():
    src = "def helper(): pass\ndef helper(): pass\ndef test_a(): pass\nclass TestA:\n    def test_a(self): pass\n"
    assert shadowed_tests(src) == []
