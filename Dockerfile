# loadkit: one image for the reference targets, the Locust master and the workers.
#   docker build -t loadkit .            (docker-compose.yml builds it for you)
# Build stage: wheels for everything (a compiler is there for platforms without binary wheels).
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc g++ libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links=/wheels loadkit && rm -rf /wheels
WORKDIR /app
# scenarios are run by path (locust -f locustfiles/..., k6 run k6/...); reports/ is a mount point
COPY locustfiles ./locustfiles
COPY k6 ./k6
RUN mkdir -p reports
# 8089: Locust web UI (and /metrics); 5557: master <- workers; 9646: headless --metrics-port
EXPOSE 8089 5557 9646
CMD ["loadkit", "--help"]
