"""The ``tasks`` entry point: registers the pack's task types (their modules load on first use)."""

from __future__ import annotations

from taskloom import hookimpl
from taskloom.registry import TaskRegister


@hookimpl
def register_tasks(register: TaskRegister) -> None:
    from taskloom_tasks.backtranslation import InstructionBacktranslation
    from taskloom_tasks.classification import TextClassification
    from taskloom_tasks.evol_instruct import EvolInstruct
    from taskloom_tasks.pairwise import PairwiseJudge
    from taskloom_tasks.prometheus import PrometheusEval
    from taskloom_tasks.rubric import RubricJudge
    from taskloom_tasks.scorers import ComplexityScorer, QualityScorer
    from taskloom_tasks.self_instruct import SelfInstruct
    from taskloom_tasks.ultrafeedback import UltraFeedback

    register("ultrafeedback", UltraFeedback)
    register("prometheus-eval", PrometheusEval)
    register("pairwise-judge", PairwiseJudge)
    register("quality-scorer", QualityScorer)
    register("complexity-scorer", ComplexityScorer)
    register("rubric-judge", RubricJudge)
    register("self-instruct", SelfInstruct)
    register("evol-instruct", EvolInstruct)
    register("instruction-backtranslation", InstructionBacktranslation)
    register("text-classification", TextClassification)
