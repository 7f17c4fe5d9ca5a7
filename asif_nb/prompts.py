"""Class names and prompt templates: the one check every stage uses, and the class-major prompt list.

A template is a format string with ``{c}`` where the class name goes (CLIP_benchmark's convention); ``"{}"``, as
CLIP's own notebooks write it, is read as ``{c}``. A template without the class name is refused: every class
would get the same prompt and every score would tie. This module imports nothing from the package, so any stage
(the eval loaders, the pipeline, the front door) can use it.
"""
from __future__ import annotations

import string
from collections.abc import Iterable, Mapping

__all__ = ["check_class_names", "check_templates", "prompts_for"]

_EXAMPLE = "['a photo of a {c}.']"


def check_templates(templates) -> list[str]:
    """``templates`` as a list of ``{c}`` format strings, or a ``ValueError`` / ``TypeError`` naming the fix.

    Each template must name the class exactly through ``{c}`` (format spec and conversion allowed, e.g.
    ``{c!r}``); ``{}`` is converted to ``{c}``. Other fields (``{x}``, ``{0}``), unbalanced braces and templates
    without any field are refused. Literal braces are written ``{{`` and ``}}``.
    """
    if isinstance(templates, (str, bytes)):
        raise TypeError(f"templates={templates!r} is one string: pass a list of templates, e.g. "
                        f"[{templates!r}] or {_EXAMPLE}.")
    if isinstance(templates, Mapping) or not isinstance(templates, Iterable):
        raise TypeError(f"templates must be a list of strings with {{c}}, e.g. {_EXAMPLE}; got "
                        f"{type(templates).__name__}.")
    checked = [_check_template(template, i) for i, template in enumerate(templates)]
    if not checked:
        raise ValueError(f"templates is empty: pass at least one, e.g. {_EXAMPLE}.")
    return checked


def check_class_names(class_names) -> list[str]:
    """``class_names`` as a list of strings; a bare string (which would be read as one class per character)
    or a name that is not a string is refused with the fix."""
    if isinstance(class_names, (str, bytes)):
        raise TypeError(f"class_names={class_names!r} is one string, which would make one class per character: "
                        f"pass a list of class names, e.g. [{class_names!r}, ...].")
    if isinstance(class_names, Mapping) or not isinstance(class_names, Iterable):
        raise TypeError(f"class_names must be a list of strings, got {type(class_names).__name__}.")
    names = list(class_names)
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"class_names[{i}]={name!r} is a {type(name).__name__}, not a string: pass one string "
                            "per class (str(name) for numbers).")
    if not names:
        raise ValueError("class_names is empty: pass at least one class name.")
    return names


def prompts_for(class_names, templates) -> list[str]:
    """Class-major prompt list (class c, template t at row ``c * len(templates) + t``), as
    ``AsifModel.classify`` expects. Both arguments are checked (``check_class_names``, ``check_templates``)."""
    names, templates = check_class_names(class_names), check_templates(templates)
    return [template.format(c=name) for name in names for template in templates]


def _check_template(template, index: int) -> str:
    where = f"templates[{index}]={template!r}"
    if not isinstance(template, str):
        raise TypeError(f"{where} is a {type(template).__name__}: each template is a string with {{c}}, "
                        f"e.g. {_EXAMPLE}.")
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"{where} is not a valid template ({err}): put the class name as {{c}} and write "
                         "literal braces as {{ and }}.") from None
    rebuilt, named = [], 0
    for literal, field, spec, conversion in fields:
        rebuilt.append(literal.replace("{", "{{").replace("}", "}}"))
        if field is None:
            continue
        if field not in ("", "c"):
            raise ValueError(f"{where} has the field {{{field}}}: the only field a template may have is {{c}}, "
                             "the class name (write literal braces as {{ and }}).")
        if "{" in (spec or ""):
            raise ValueError(f"{where} nests a field in a format spec: write the class name as {{c}}.")
        named += 1
        rebuilt.append("{c" + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    if not named:
        raise ValueError(f"{where} has no {{c}} placeholder for the class name: every class would get the same "
                         "prompt and all scores would tie. Write e.g. 'a photo of a {c}.'")
    checked = "".join(rebuilt)
    try:
        checked.format(c="x")
    except (ValueError, TypeError) as err:  # e.g. a format spec a string cannot take, '{c:d}'
        raise ValueError(f"{where} cannot be filled with a class name ({err}): write the class name as {{c}}.") from None
    return checked
