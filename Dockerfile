# One image for every Regis process; docker-compose.yml picks the command.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 REGIS_DATA_DIR=/var/lib/regis
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN python manage.py collectstatic --noinput -v 0 || true
EXPOSE 5060/udp 5060/tcp 8000/tcp
CMD ["python", "manage.py", "runsip"]
