"""Saliency maps of the ED/ES diagnosis model and the in-heart saliency score.

* `gradcam.gradcam(model, ed, es, target_class=None)`: Grad-CAM of both branches (hooks, no dependency).
* `attribution.integrated_gradients(...)`, `attribution.occlusion(...)`: layer-independent input attributions.
* `score`: the in-heart share of positive saliency, per image, patient and configuration (with CIs).
* `run.run_saliency(run_dir, SaliencyConfig())` (`config.SaliencyConfig`): every finished cell of a study run
  (`cell.score_cell`: its test inputs, maps, scores, overlays) -> `tables/saliency.{md,csv,json}`
  (`table.write_saliency_table`). Paths in the run folder: `cmrprior.runs.RunFolder.saliency_*`.
  CLI: `cmrprior saliency --run RUN`.
"""
