"""PyTorch example: tune a small MLP classifier on scikit-learn's digits data."""

import torch
from aimlutils.hyper_opt.base_objective import *  # BaseObjective, optuna
from aimlutils.hyper_opt.utils import TorchCheckpoint, report_and_prune
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


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
    x_train, x_valid = scaler.transform(x_train), scaler.transform(x_valid)
    return [
        torch.as_tensor(a, dtype=torch.float32 if a.ndim == 2 else torch.long)
        for a in (x_train, y_train, x_valid, y_valid)
    ]


def build_model(n_inputs, n_classes, hidden_dims, dropout, activation):
    layers = []
    for width in hidden_dims:
        layers += [
            nn.Linear(n_inputs, width),
            ACTIVATIONS[activation](),
            nn.Dropout(dropout),
        ]
        n_inputs = width
    layers.append(nn.Linear(n_inputs, n_classes))
    return nn.Sequential(*layers)


def evaluate(model, loss_fn, x_valid, y_valid):
    model.eval()
    with torch.no_grad():
        logits = model(x_valid)
        val_loss = loss_fn(logits, y_valid).item()
        val_accuracy = (logits.argmax(1) == y_valid).float().mean().item()
    return val_loss, val_accuracy


class Objective(BaseObjective):
    def __init__(self, study, config, metric="val_loss", device="cpu"):
        BaseObjective.__init__(self, study, config, metric, device)

    def train(self, trial, conf):
        # Several workers may share a few cores; one thread each avoids thrashing.
        torch.set_num_threads(1)
        # Same seed for every trial: scores differ by hyperparameters, not luck.
        torch.manual_seed(conf["seed"])

        data = load_data(conf["seed"], conf["data"]["validation_fraction"])
        x_train, y_train, x_valid, y_valid = (t.to(self.device) for t in data)

        model = build_model(
            x_train.shape[1],
            10,  # digits 0-9
            conf["model"]["hidden_dims"],
            conf["model"]["dropout"],
            conf["model"]["activation"],
        ).to(self.device)
        optimizer = torch.optim.Adam(
            model.parameters(),
            lr=conf["optimizer"]["learning_rate"],
            weight_decay=conf["optimizer"]["weight_decay"],
        )
        loss_fn = nn.CrossEntropyLoss()
        batch_size = conf["trainer"]["batch_size"]

        # A trial stopped by Ctrl-C or a job's time limit is continued by the trial that re-runs
        # its parameters: same directory, so this restores model, optimizer, epoch and random state.
        checkpoint = TorchCheckpoint(self.checkpoint_dir(trial), model, optimizer)
        if checkpoint.restored:
            print(f"trial {trial.number} continues trial {self.continues(trial)} at epoch {checkpoint.epoch}")

        epochs = conf["trainer"]["epochs"]
        for epoch in range(checkpoint.epoch, epochs):
            model.train()
            total = 0.0
            order = torch.randperm(len(x_train), device=self.device)
            for idx in order.split(batch_size):
                optimizer.zero_grad()
                loss = loss_fn(model(x_train[idx]), y_train[idx])
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            train_loss = total / len(x_train)
            val_loss, _ = evaluate(model, loss_fn, x_valid, y_valid)

            # Let the pruner stop unpromising trials early; then save, and leave if asked to stop
            # (the job ends soon): the next run of these parameters starts at the next epoch.
            # After the last epoch the trial is done: no stop, which would cost a run to finish it.
            report_and_prune(trial, val_loss, epoch)
            checkpoint.save(epoch, loss=train_loss)
            if epoch + 1 < epochs:
                self.stop_if_requested()

        val_loss, val_accuracy = evaluate(model, loss_fn, x_valid, y_valid)
        return {
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "loss": checkpoint.extra["loss"],
            "first_epoch": checkpoint.epoch,  # where this run started: 0, unless it continued one
        }
