"""The OCPP 1.6J door into the domain: websocket server, per-charger handler, command
gateway, and a charge point simulator."""
