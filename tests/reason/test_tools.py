"""SceneTools and the helpers against hand-built scene graphs with known geometry."""

from __future__ import annotations

import json
import math

import pytest

from spatialforge.reason.tools import QUANTITIES, SceneTools, Toolbox, ToolError, VLMTools, calculate, triangle
from tests.reason.scenes import REFS, graph


@pytest.fixture
def tools() -> SceneTools:
    return SceneTools(graph(), REFS)


@pytest.mark.parametrize(("quantity", "a", "b", "value", "unit"), [
    ("distance", 1, 2, 1.0, "m"),
    ("distance", 2, 3, math.sqrt(2), "m"),
    ("distance", 1, 4, 1.0, "m"),
    ("horizontal_distance", 1, 4, 0.0, "m"),
    ("horizontal_distance", 2, 3, math.sqrt(2), "m"),
    ("vertical_distance", 4, 1, 1.0, "m"),
    ("vertical_distance", 1, 2, 0.0, "m"),
    ("clock", 1, 2, 3, "clock"),   # B is to the right of A
    ("clock", 1, 3, 12, "clock"),  # C is straight ahead of A
    ("clock", 2, 1, 9, "clock"),
    ("clock", 1, 8, 1, "clock"),   # the vase: 0.5 right, 0.6 ahead of the mug (40 degrees)
    ("width", 2, None, 0.4, "m"),
    ("depth", 2, None, 0.3, "m"),
    ("height", 3, None, 0.9, "m"),
    ("camera_distance", 3, None, 3.04, "m"),
    ("elevation", 4, None, 1.5, "m"),
    ("size", 2, None, 0.4 * 0.3 * 0.25, "m^3"),
])
def test_measure_every_quantity(tools, quantity, a, b, value, unit):
    args = {"quantity": quantity, "a": a, **({"b": b} if b is not None else {})}
    out = tools.call("measure", args)
    assert out["quantity"] == quantity and out["unit"] == unit
    assert out["value"] == pytest.approx(value, abs=1e-12)
    assert "note" not in out
    json.dumps(out)


def test_every_quantity_is_covered():
    assert set(QUANTITIES) == {"distance", "horizontal_distance", "vertical_distance", "clock", "width", "depth",
                               "height", "camera_distance", "elevation", "size"}


def test_direction_gives_the_offsets_along_the_three_axes(tools):
    # the blue box (1, 2, .5) from the red mug (0, 2, .5): 1 m to the right, 0.24 m farther from the camera
    out = tools.call("measure", {"quantity": "direction", "a": "the blue box", "b": "the red mug"})
    assert out["value"] == pytest.approx({"right_m": 1.0, "farther_m": 0.24, "above_m": 0.0})
    assert out["description"] == "a is 1.00 m to the right of, 0.24 m farther from the camera than b"
    back = tools.call("measure", {"quantity": "direction", "a": 1, "b": 4})  # the mug from the lamp above it
    assert back["value"]["above_m"] == pytest.approx(-1.0) and "1.00 m below" in back["description"]
    with pytest.raises(ToolError, match="direction needs two objects"):
        tools.call("measure", {"quantity": "direction", "a": 1})
    assert "direction" in json.dumps(tools.specs())


def test_vertical_quantities_flagged_without_a_support_plane():
    t = SceneTools(graph(reliable=False), REFS)
    assert t.call("measure", {"quantity": "elevation", "a": 4})["note"] == "vertical_unreliable"
    assert "note" not in t.call("measure", {"quantity": "distance", "a": 1, "b": 2})


@pytest.mark.parametrize("name", ["the red mug", "red mug", "RED MUG", "  The Red  Mug ", 1, "1", 1.0])
def test_names_resolve(tools, name):
    assert tools.call("measure", {"quantity": "distance", "a": name, "b": "the blue box"})["value"] == 1.0


def test_references_disambiguate_shared_captions(tools):
    left = tools.call("measure", {"quantity": "distance", "a": "the chair on the left", "b": 1})["value"]
    right = tools.call("measure", {"quantity": "distance", "a": "chair on the right", "b": 1})["value"]
    assert left == pytest.approx(math.hypot(1.5, 0.5, 0.05))
    assert right == pytest.approx(left)
    assert tools.call("measure", {"quantity": "distance", "a": "the chair on the left", "b": 2})["value"] > 2.5


@pytest.mark.parametrize(("args", "message"), [
    ({"quantity": "distance", "a": "chair", "b": 1},
     "'chair' is ambiguous: it names objects 5 (the chair on the left)"),
    ({"quantity": "distance", "a": "the unicorn", "b": 1}, "no object named 'the unicorn'; the objects are 1 (the red"),
    ({"quantity": "distance", "a": 99, "b": 1}, "no object with id 99"),
    ({"quantity": "distance", "a": True, "b": 1}, "an object must be an id or a name"),
    ({"quantity": "distance", "a": 1}, "distance needs two objects"),
    ({"quantity": "distance", "a": 1, "b": 1}, "two different objects"),
    ({"quantity": "width", "a": 1, "b": 2}, "width is a property of one object"),
    ({"quantity": "volume", "a": 1}, "unknown quantity 'volume'; use one of: distance"),
    ({"a": 1}, "measure: missing argument quantity"),
    ({"quantity": "width", "a": 1, "c": 3}, "measure: unknown argument c"),
])
def test_measure_errors_are_one_line(tools, args, message):
    with pytest.raises(ToolError) as err:
        tools.call("measure", args)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_tool(tools):
    with pytest.raises(ToolError, match="unknown tool 'fly'; the tools are list_objects, measure"):
        tools.call("fly", {})


def test_list_objects(tools):
    out = tools.call("list_objects", {})
    assert [o["id"] for o in out["objects"]] == list(range(1, 9))
    mug = out["objects"][0]
    assert mug == {"id": 1, "caption": "red mug", "reference": "the red mug", "center": [0.0, 2.0, 0.5],
                   "width": 0.1, "depth": 0.08, "height": 0.12}
    json.dumps(out)
    with pytest.raises(ToolError, match="unknown argument"):
        tools.call("list_objects", {"x": 1})


def test_point_segment_distance(tools):
    # the vase (0.5, 2.6) is 0.6 from the inside of segment mug-box; the book (2, 2) lies on the line beyond the box
    assert tools.call("point_segment_distance", {"point": 8, "a": 1, "b": 2})["value"] == pytest.approx(0.6)
    assert tools.call("point_segment_distance", {"point": "the book", "a": 1, "b": 2})["value"] == pytest.approx(1.0)
    assert tools.call("point_segment_distance", {"point": 3, "a": 1, "b": 1})["value"] == pytest.approx(1.0)
    assert tools.call("point_segment_distance", {"point": 3, "a": 1, "b": 2})["unit"] == "m"


def test_triangle():
    right = triangle(1.0, math.sqrt(2), 1.0)  # AB = 1, BC = sqrt 2, CA = 1: right angle at A
    assert right["angles_deg"] == pytest.approx([90.0, 45.0, 45.0])
    assert right["isosceles"] and right["right"] and right["equal_pair"] == [0, 2]
    scalene = triangle(3.0, 4.0, 5.0)  # angle at B (between AB and BC) is 90
    assert scalene["angles_deg"] == pytest.approx([math.degrees(math.acos(3 / 5)), 90.0,
                                                   math.degrees(math.acos(4 / 5))])
    assert scalene["right"] and not scalene["isosceles"] and scalene["equal_pair"] is None
    assert triangle(1.0, 1.04, 2.0)["isosceles"]        # 1.04 vs 1: within 5 %
    assert not triangle(1.0, 1.06, 1.6)["isosceles"]    # 6 % apart
    assert not triangle(1.0, 1.0, 1.0)["right"]
    assert sum(triangle(2.0, 3.0, 4.0)["angles_deg"]) == pytest.approx(180.0)
    with pytest.raises(ToolError, match="triangle inequality"):
        triangle(1.0, 1.0, 3.0)
    with pytest.raises(ToolError, match="ab must be > 0"):
        triangle(0, 1, 1)


def test_fits_between_and_calculate(tools):
    assert tools.call("fits_between", {"width": 0.5, "gap": 0.8}) == {"fits": True, "clearance": pytest.approx(0.3)}
    assert tools.call("fits_between", {"width": 0.9, "gap": 0.8})["fits"] is False
    # B and C overlap (a negative gap): nothing fits, and it is an answer, not an error
    assert tools.call("fits_between", {"width": 0.1, "gap": -0.3}) == {"fits": False, "clearance": pytest.approx(-0.4)}
    assert tools.call("calculate", {"expression": "abs(1.2 - 2) + max(1, 2, 3) * sqrt(4) ** 2 / 2"})["value"] == \
        pytest.approx(0.8 + 6.0)
    assert calculate("round(2 / 3, 2)")["value"] == 0.67
    assert calculate("-min(1, -2)")["value"] == 2.0


@pytest.mark.parametrize(("expression", "message"), [
    ("__import__('os').system('true')", "is not allowed"),
    ("x + 1", "'x' is not allowed"),
    ("1 / 0", "division by zero"),
    ("2 ** 1000", "exponent 1000"),
    ("sqrt(-1)", "negative"),
    ("abs(1, 2)", "abs() takes 1 argument(s), got 2"),
    ("1 +", "not an arithmetic expression"),
    ("(1).real", "is not allowed"),
    ("True + 1", "is not allowed"),
    ("", "non-empty string"),
])
def test_calculate_refuses(expression, message):
    with pytest.raises(ToolError) as err:
        calculate(expression)
    assert message in str(err.value)


def test_specs_are_openai_function_tools(tools):
    specs = tools.specs()
    names = [s["function"]["name"] for s in specs]
    assert names == list(tools.names)
    for s in specs:
        assert s["type"] == "function"
        params = s["function"]["parameters"]
        assert params["type"] == "object" and set(params["required"]) <= set(params["properties"])
    measure = specs[names.index("measure")]["function"]["parameters"]
    assert measure["properties"]["quantity"]["enum"] == [*QUANTITIES, "direction"]
    json.dumps(specs)


class _FakeVLM:
    name = "fake-vlm"

    def __init__(self, text="about 1.5 m", error=None):
        self.text, self.error, self.items = text, error, []

    def answer(self, items, *, progress=False, use_image=True):
        from spatialforge.eval.models import ModelAnswer
        self.items.extend(items)
        return [ModelAnswer(i.id, None if self.error else self.text, error=self.error) for i in items]


def test_vlm_tools_and_toolbox(tools):
    vlm = _FakeVLM()
    vt = VLMTools(vlm, b"PNG", [{"id": 1, "caption": "red mug", "reference": "the red mug"}])
    assert vt.call("ask_vlm", {"question": "How far is the  mug?"}) == {"answer": "about 1.5 m"}
    assert vlm.items[0].question == "How far is the mug?" and vlm.items[0].image_bytes == b"PNG"
    assert vt.call("list_objects", {})["objects"][0]["caption"] == "red mug"
    assert "list_objects" not in VLMTools(vlm, "photo.jpg").names
    with pytest.raises(ToolError, match="ask_vlm: fake-vlm failed: HTTP 500"):
        VLMTools(_FakeVLM(error="HTTP 500"), "photo.jpg").call("ask_vlm", {"question": "q?"})
    box = Toolbox(tools, vt)
    assert box.call("list_objects", {})["objects"][0]["center"] == [0.0, 2.0, 0.5]  # the scene's, with geometry
    assert box.call("ask_vlm", {"question": "q?"}) == {"answer": "about 1.5 m"}
    names = [s["function"]["name"] for s in box.specs()]
    assert len(names) == len(set(names)) and "ask_vlm" in names and "measure" in names
