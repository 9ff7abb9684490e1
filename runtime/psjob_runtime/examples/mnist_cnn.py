"""mnist_cnn: the 1.2M-parameter CNN of PyTorch's parameter-server tutorial, for throughput.

MNIST itself cannot be downloaded inside every cluster, and throughput does not depend on the
pixels, so the workers train on MNIST-shaped random images (1x28x28, 10 classes).

spec.training.config (all optional): steps, batchSize, warmupSteps, seed.
"""

import time

import torch
import torch.nn.functional as F  # noqa: N812 - the name every PyTorch reader expects
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from torch import nn

import psjob_runtime


class MnistCnnConfig(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    steps: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)
    warmup_steps: int = Field(5, ge=0)
    seed: int = 0


class Net(nn.Module):
    """conv(32) -> conv(64) -> maxpool -> fc(9216, 128) -> fc(128, 10): 1,199,882 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(self.dropout1(x), 1)
        x = self.dropout2(F.relu(self.fc1(x)))
        return F.log_softmax(self.fc2(x), dim=1)


def synthetic_batches(batch_size: int, seed: int, count: int = 8) -> list[torch.Tensor]:
    """A few fixed batches of MNIST-shaped images and labels, cycled through."""
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.cat(
            [
                torch.randn(batch_size, 1 * 28 * 28, generator=generator),
                torch.randint(0, 10, (batch_size, 1), generator=generator).float(),
            ],
            dim=1,
        )
        for _ in range(count)
    ]


def main() -> None:
    torch.set_num_threads(1)
    session = psjob_runtime.init()
    config = session.config_as(MnistCnnConfig)
    torch.manual_seed(config.seed)
    model = Net().to(session.device)
    optimizer = session.optimizer(model)
    batches = synthetic_batches(config.batch_size, config.seed + session.worker_index)
    loss_fn = nn.NLLLoss()
    started = time.monotonic()
    for step in range(config.warmup_steps + config.steps):
        if step == config.warmup_steps:
            started = time.monotonic()
        batch = batches[step % len(batches)].to(session.device)
        images, labels = batch[:, :-1].view(-1, 1, 28, 28), batch[:, -1].long()
        optimizer.zero_grad()
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        session.report(step=step + 1, loss=loss.item(), samples=config.batch_size)
    rate = config.steps * config.batch_size / (time.monotonic() - started)
    print(
        f"worker {session.worker_index}: throughput {rate:.1f} samples/s "
        f"over {config.steps} steps of {config.batch_size}",
        flush=True,
    )
    session.finish()


if __name__ == "__main__":
    main()
