"""Table layouts as data: a column's key is the logged name of its metric and postprocess, and a
layout names the column each row leads with by the row's headline postprocess."""

from harness.report.tables import LAYOUTS, Column
from harness.spec.schema import Table


def test_every_layout_of_the_spec_exists_and_its_columns_read_logged_names():
    assert set(LAYOUTS) == set(Table.model_fields["layout"].annotation.__args__)
    assert Column("AP50 no NMS", "ap50", "nms_free").key == "eval.nms_free.ap50"
    assert Column("mAP", "ap").key == "eval.ap"  # each row's headline postprocess


def test_a_row_leads_with_the_first_column_of_its_headline_postprocess():
    quick = LAYOUTS["quickstart"]
    assert quick.headline("nms").key == "eval.nms.ap50" and quick.headline("nms_free").key == "eval.nms_free.ap50"
    assert {LAYOUTS["defcn_coco"].headline(mode).key for mode in ("nms", "nms_free")} == {"eval.ap"}
    assert [name for name, layout in LAYOUTS.items() if layout.note] == ["defcn_ablation"]
