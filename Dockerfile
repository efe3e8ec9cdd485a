# cityseg serve on the CPU: the API and the web page over one model bundle.
#
#   docker build -t cityseg .
#   docker run --rm -p 5000:5000 -v "$PWD/runs/train/fpn/best:/model:ro" cityseg
#   docker run --rm -p 5000:5000 -v "$PWD/runs/train/fpn/best:/model:ro" \
#       -v "$PWD/data/cityscapes:/data:ro" cityseg --max-queue 16
#
# The bundle is mounted at /model; a prepared dataset mounted at /data is served too (the
# page's browser); arguments after the image name are added to `cityseg serve`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin cityseg

WORKDIR /opt/cityseg
# Only what the wheel is built from (see .dockerignore for the rest of the context).
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir . && rm -rf /opt/cityseg/src

USER cityseg
WORKDIR /home/cityseg
EXPOSE 5000

# Alive = the process answers (the model may still be warming up; /readyz says when ready).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/livez', timeout=4)"]

# exec: cityseg is PID 1 and gets SIGTERM (in-flight requests finish, 30 s grace).
ENTRYPOINT ["/bin/sh", "-c", "if [ -d /data ]; then set -- --data /data \"$@\"; fi; exec cityseg serve --model /model --host 0.0.0.0 --port 5000 \"$@\"", "cityseg-serve"]
CMD []
