"""The judge: score every epoch × weight cell of a run objectively and recommend the LoRA to keep.

- ``score``: feature recall, prompt adherence, leakage, identity, corruption; the combined
  F-beta score; the recommendation and its plain-words reason (pure Python).
- ``prompts``: the evaluation prompt set (trigger alone; + an unseen outfit, place, pose).
- ``found_tags``: the tagger's view of each grid image (scores cached like the tagger's cache).
- ``identity``: optional CCIP similarity to the training images (onnxruntime).
- ``run``: ``plan_judge`` + ``judge`` (grid via ``trainer.grid.render_run_grid``, judge.json).
- ``report``: the text table and the PNG plot.

docs/judge.md explains every metric and the formula. No Textual here.
"""

from trainer.judge.run import JudgePlan, JudgeResult, judge, load_judge, plan_judge
from trainer.judge.score import CellScore, ImageTagsFound, Recommendation, Weights, recommend, score_cells

__all__ = ["CellScore", "ImageTagsFound", "JudgePlan", "JudgeResult", "Recommendation", "Weights",
           "judge", "load_judge", "plan_judge", "recommend", "score_cells"]
