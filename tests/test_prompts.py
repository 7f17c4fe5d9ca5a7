"""The one template / class-name check every stage uses (``asif_nb.prompts``)."""
from __future__ import annotations

import pytest

from asif_nb.pipeline import prompts_for as pipeline_prompts_for
from asif_nb.prompts import check_class_names, check_templates, prompts_for


def test_prompts_are_class_major_and_the_pipeline_name_is_the_same_function():
    assert prompts_for(["cat", "dog"], ["a {c}.", "the {c}!"]) == ["a cat.", "the cat!", "a dog.", "the dog!"]
    assert pipeline_prompts_for is prompts_for


@pytest.mark.parametrize("template, filled", [
    ("a photo of a {}.", "a photo of a cat."),          # CLIP's notebooks
    ("{c}", "cat"),
    ("{c!r} in {{braces}}", "'cat' in {braces}"),        # conversions and literal braces kept
    ("{c:>5}|{}", "  cat|cat"),                          # a format spec; both spellings in one template
])
def test_accepted_templates_fill_in_the_class_name(template, filled):
    assert prompts_for(["cat"], [template]) == [filled]


@pytest.mark.parametrize("template, message", [
    ("a photo.", r"no \{c\} placeholder.*all scores would tie"),
    ("{{c}}", r"no \{c\} placeholder"),                 # literal braces are not a field
    ("a {x}.", r"field \{x\}.*only field a template may have is \{c\}"),
    ("a {0}.", r"field \{0\}"),
    ("a {c.upper}.", r"field \{c.upper\}"),
    ("a {c", "not a valid template"),
    ("a c}", "not a valid template"),
    ("a {c:{w}}", "nests a field"),
    ("a {c:d}", "cannot be filled with a class name"),
])
def test_bad_templates_are_refused_with_the_fix(template, message):
    with pytest.raises(ValueError, match=message):
        check_templates([template])
    with pytest.raises(ValueError, match=message):
        prompts_for(["cat"], ["{c}", template])


@pytest.mark.parametrize("templates, error, message", [
    ("a photo of a {c}.", TypeError, r"one string: pass a list of templates, e\.g\. \['a photo of a \{c\}\.'\]"),
    ([], ValueError, "empty"),
    ([None], TypeError, r"templates\[0\]=None is a NoneType"),
    ({"a {c}": 1}, TypeError, "must be a list"),
    (3, TypeError, "must be a list"),
])
def test_templates_must_be_a_non_empty_list_of_strings(templates, error, message):
    with pytest.raises(error, match=message):
        check_templates(templates)


@pytest.mark.parametrize("names, error, message", [
    ("cat", TypeError, "one class per character"),
    ([], ValueError, "empty"),
    (["cat", 3], TypeError, r"class_names\[1\]=3 is a int"),
    (["cat", ["kitten"]], TypeError, r"class_names\[1\]"),
    (None, TypeError, "must be a list"),
])
def test_class_names_must_be_a_list_of_strings(names, error, message):
    with pytest.raises(error, match=message):
        check_class_names(names)
    with pytest.raises(error, match=message):
        prompts_for(names, ["{c}"])


def test_checked_lists_are_new_lists_with_the_same_names():
    names = ("cat", "dog")
    assert check_class_names(names) == ["cat", "dog"]
    templates = ["a {}."]
    assert check_templates(templates) == ["a {c}."] and templates == ["a {}."]  # the caller's list is not changed
