"""KTRDR's own files in a model folder (docs/ktrdr-semantics.md §11): metadata_v3.json, features.json
and config.json, so KTRDR's tooling (ModelBundle) reads what we train; `save_artifacts` writes them
beside ours."""

from __future__ import annotations

from trainhost.jobs.pipeline.label_specs import OUTPUT_TYPES
from trainhost.jobs.pipeline.strategy import Strategy
from trainhost.jobs.pipeline.trainer import TrainResult


def ktrdr_files(strategy: Strategy, normalization: dict, result: TrainResult, created_at: str) -> dict[str, dict]:
    """The three files by name, as `save_artifacts(extra_files=...)` takes them. Our normalisation is
    real, so `normalization_params` carries it in the format KTRDR's backtest applies
    ({method, min, max} / {method, mean, std})."""
    raw = strategy.to_dict()["raw"]
    history = {key: [record[key] for record in result.history]
               for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
    accuracies = history["train_accuracy"]
    training_metrics = {
        "epochs_trained": result.epochs_trained, "final_train_loss": result.final_train_loss,
        "final_train_accuracy": result.final_train_accuracy,
        "best_train_accuracy": max(accuracies) if accuracies else None, "training_time": result.training_time_s,
        "history": history, "final_val_loss": result.final_val_loss,
        "final_val_accuracy": result.final_val_accuracy, "best_val_accuracy": result.best_val_accuracy,
    }
    metadata_v3 = {
        "model_name": strategy.name, "strategy_name": strategy.name, "created_at": created_at,
        "strategy_version": strategy.version, "indicators": raw.get("indicators", {}),
        "fuzzy_sets": raw.get("fuzzy_sets", {}), "nn_inputs": raw.get("nn_inputs", []),
        "resolved_features": strategy.feature_ids, "training_symbols": strategy.symbols,
        "training_timeframes": strategy.feature_timeframes, "training_metrics": training_metrics,
        "output_type": OUTPUT_TYPES[strategy.labels.source], "model_type": strategy.model.type,
        "sequence_length": strategy.model.sequence_length, "normalization_params": normalization,
        "context_data_config": None, "context_source_ids": [],
    }
    lookback = ((raw.get("model") or {}).get("features") or {}).get("lookback_periods")
    features = {
        "model_version": "pure_fuzzy_v1", "feature_type": "pure_fuzzy", "fuzzy_features": strategy.feature_ids,
        "feature_count": len(strategy.features),
        "temporal_config": {"lookback_periods": lookback, "enabled": False},
        "scaling_info": {"requires_scaling": False,
                         "reason": "fuzzy memberships are in [0, 1]; raw inputs carry normalization_params"},
        "feature_importance": {},
    }
    config = dict(raw)
    if strategy.task == "regression":
        config["model"] = {**(config.get("model") or {}), "output_format": "regression"}
    return {"metadata_v3.json": metadata_v3, "features.json": features, "config.json": config}
