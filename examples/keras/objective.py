"""Keras example: tune a small MLP classifier on scikit-learn's digits data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no start-up chatter

import keras
import tensorflow as tf
from aimlutils.hyper_opt.base_objective import *  # BaseObjective, optuna
from aimlutils.hyper_opt.utils import KerasCheckpoint, KerasPruningCallback
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler


def custom_updates(trial, conf):
    # num_dense is not in model.yml, so the package cannot place it for us:
    # suggest it here (range taken from hyper.yml) and expand it into layer sizes.
    settings = conf["optuna"]["parameters"]["num_dense"]["settings"]
    num_dense = trial.suggest_int(**settings)
    # Uses the first width from model.yml, so calling this twice is harmless.
    width = conf["model"]["hidden_dims"][0]
    conf["model"]["hidden_dims"] = [width] * num_dense
    return conf


def load_data(seed, validation_fraction):
    x, y = load_digits(return_X_y=True)
    # A fixed, stratified split, so every trial is scored on the same examples.
    x_train, x_valid, y_train, y_valid = train_test_split(
        x, y, test_size=validation_fraction, stratify=y, random_state=seed
    )
    # Fit the scaler on the training split only, so no validation data leaks in.
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), y_train, scaler.transform(x_valid), y_valid


def build_model(n_inputs, n_classes, hidden_dims, dropout, activation):
    layers = [keras.Input(shape=(n_inputs,))]
    for width in hidden_dims:
        layers += [keras.layers.Dense(width, activation=activation), keras.layers.Dropout(dropout)]
    layers.append(keras.layers.Dense(n_classes, activation="softmax"))
    return keras.Sequential(layers)


class Objective(BaseObjective):
    def __init__(self, study, config, metric="val_loss", device="cpu"):
        BaseObjective.__init__(self, study, config, metric, device)

    def train(self, trial, conf):
        # Several workers may share a few cores; one thread each avoids thrashing.
        # (Setting the same value again in a later trial is allowed.)
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        # Drop the last trial's model, and use the same seed for every trial:
        # scores differ by hyperparameters, not luck.
        keras.backend.clear_session()
        keras.utils.set_random_seed(conf["seed"])

        x_train, y_train, x_valid, y_valid = load_data(conf["seed"], conf["data"]["validation_fraction"])
        model = build_model(
            x_train.shape[1],
            10,  # digits 0-9
            conf["model"]["hidden_dims"],
            conf["model"]["dropout"],
            conf["model"]["activation"],
        )
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=conf["optimizer"]["learning_rate"],
                weight_decay=conf["optimizer"]["weight_decay"],
            ),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        # A trial stopped by Ctrl-C or a job's time limit is continued by the trial that re-runs
        # its parameters: same directory, so restore() returns the epoch to start from (0 if new).
        checkpoint = KerasCheckpoint(self.checkpoint_dir(trial))
        first_epoch = checkpoint.restore(model)
        if first_epoch:
            print(f"trial {trial.number} continues trial {self.continues(trial)} at epoch {first_epoch}")
        history = model.fit(
            x_train,
            y_train,
            validation_data=(x_valid, y_valid),
            epochs=conf["trainer"]["epochs"],
            initial_epoch=first_epoch,
            batch_size=conf["trainer"]["batch_size"],
            verbose=0,
            callbacks=[
                # Reports self.metric after each epoch; raises optuna.TrialPruned out of fit()
                # when the pruner stops the trial.
                KerasPruningCallback(trial, self.metric, interval=1),
                # Then saves weights and optimizer state, and leaves fit() if the worker was
                # asked to stop (the job ends soon): the next run starts at the next epoch.
                checkpoint,
            ],
        )

        last = {name: values[-1] for name, values in history.history.items()}
        if not last:  # every epoch was trained before the stop: score the restored model
            loss, _ = model.evaluate(x_train, y_train, verbose=0)
            val_loss, val_accuracy = model.evaluate(x_valid, y_valid, verbose=0)
            last = {"loss": loss, "val_loss": val_loss, "val_accuracy": val_accuracy}
        return {
            "val_loss": last["val_loss"],
            "val_accuracy": last["val_accuracy"],
            "loss": last["loss"],
            "first_epoch": first_epoch,  # where this run started: 0, unless it continued one
        }
