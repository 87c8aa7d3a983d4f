"""The ``tasks`` entry point: registers the pack's task types (their modules load on first use)."""

from __future__ import annotations

from taskloom.plugin import TaskRegister, hookimpl


@hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom_tasks.backtranslation import InstructionBacktranslation
    from taskloom_tasks.clair import CLAIR
    from taskloom_tasks.classification import TextClassification
    from taskloom_tasks.evol_instruct import EvolInstruct
    from taskloom_tasks.evol_quality import EvolQuality
    from taskloom_tasks.genstruct import Genstruct
    from taskloom_tasks.pairwise import PairwiseJudge
    from taskloom_tasks.prometheus import PrometheusEval
    from taskloom_tasks.rubric import RubricJudge
    from taskloom_tasks.scorers import ComplexityScorer, QualityScorer
    from taskloom_tasks.self_instruct import SelfInstruct
    from taskloom_tasks.ultrafeedback import UltraFeedback
    from taskloom_tasks.urial import URIAL

    register(UltraFeedback)
    register(PrometheusEval)
    register(PairwiseJudge)
    register(QualityScorer)
    register(ComplexityScorer)
    register(RubricJudge)
    register(SelfInstruct)
    register(EvolInstruct)
    register(InstructionBacktranslation)
    register(TextClassification)
    register(EvolQuality)
    register(Genstruct)
    register(CLAIR)
    register(URIAL)
