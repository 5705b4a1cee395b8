//! The `echo` task: returns its input message, after an optional delay that honours
//! cancellation. A port of the Go engine's echo agent, and the agent the engine's tests run
//! (`delayMs` gives them time to kill or cancel it mid-task).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use weft_plugin_sdk::agent::{Task, TaskContext, TaskError};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EchoInput {
    /// What to echo.
    pub message: String,
    /// Wait this long first (milliseconds).
    #[serde(default)]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EchoOutput {
    pub message: String,
}

pub struct Echo;

impl Task for Echo {
    type Input = EchoInput;
    type Output = EchoOutput;
    const NAME: &'static str = "echo";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "Echoes a message, after an optional delay.";

    async fn run(&self, ctx: TaskContext, input: EchoInput) -> Result<EchoOutput, TaskError> {
        if let Some(delay_ms) = input.delay_ms.filter(|&ms| ms > 0) {
            ctx.progress(0.0, format!("waiting {delay_ms} ms"));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                () = ctx.cancelled() => {
                    return Err(TaskError::cancelled(format!("cancelled during the {delay_ms} ms delay")));
                }
            }
        }
        Ok(EchoOutput {
            message: input.message,
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn input(message: &str, delay_ms: Option<u64>) -> EchoInput {
        EchoInput {
            message: message.into(),
            delay_ms,
        }
    }

    #[tokio::test]
    async fn echoes_after_the_delay() {
        let (ctx, _cancel) = TaskContext::detached("run", "step", 1);
        let started = Instant::now();
        let output = Echo.run(ctx, input("hi", Some(50))).await.unwrap();
        assert_eq!(output.message, "hi");
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn cancellation_cuts_the_delay_short() {
        let (ctx, cancel) = TaskContext::detached("run", "step", 1);
        let run = tokio::spawn(async move { Echo.run(ctx, input("hi", Some(60_000))).await });
        cancel.cancel();
        let err = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert_eq!((err.code.as_str(), err.retryable), ("cancelled", false));
    }

    #[test]
    fn input_is_camel_case_with_an_optional_delay() {
        let parsed: EchoInput = serde_json::from_str(r#"{"message":"m","delayMs":5}"#).unwrap();
        assert_eq!((parsed.message.as_str(), parsed.delay_ms), ("m", Some(5)));
        let parsed: EchoInput = serde_json::from_str(r#"{"message":"m"}"#).unwrap();
        assert_eq!(parsed.delay_ms, None);
    }
}
