//! `rumqttc-pub`: the same job done with rumqttc's MQTT v5 client on a current-thread tokio
//! runtime, written the way rumqttc's examples do it: one task publishes, the main task polls
//! the event loop. Default options except the credentials; rumqttc keeps
//! `min(Receive Maximum, --window)` QoS 1 publishes in flight (20 with mosquitto by default).

use std::process::ExitCode;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::Outgoing;
use satmqtt_bench::args::ClientArgs;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rumqttc-pub: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let a = ClientArgs::from_env();
    let token = a.token()?;
    let mut options = MqttOptions::new(a.client_id(), &a.host, a.port);
    options.set_credentials("$sat", token);
    if let Some(window) = a.window {
        options.set_outgoing_inflight_upper_limit(window);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let qos = if a.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };

    let producer = client.clone();
    let (topic, prefix, count, interval) =
        (a.topic.clone(), a.prefix.clone(), a.count, a.interval());
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for n in 0..count {
            if !interval.is_zero() {
                tokio::time::sleep_until(start + interval * n as u32).await;
            }
            if producer
                .publish(topic.as_str(), qos, false, format!("{prefix}{n}"))
                .await
                .is_err()
            {
                break;
            }
        }
    });

    let (mut sent, mut acked, mut disconnecting) = (0u64, 0u64, false);
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(_))) => sent += 1,
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(e) => anyhow::bail!("after {sent} sent, {acked} acked: {e}"),
        }
        let done = match qos {
            QoS::AtMostOnce => sent >= a.count,
            _ => acked >= a.count,
        };
        if done && !disconnecting {
            client.try_disconnect()?;
            disconnecting = true;
        }
    }
    eprintln!("rumqttc-pub: sent {sent}, acknowledged {acked}");
    Ok(())
}
