//! JNI entry points for the Java API (`android/`, class `ai.outpost.Native`).
//!
//! Each one runs under the same rules as the C functions: its error, or a panic,
//! becomes an `ai.outpost.OutpostException` carrying the stable code, thrown in
//! Java; nothing unwinds into the VM. Predictors are the C API's handles, so a
//! closed or forged handle is refused (1007) the same way.

use std::panic::{catch_unwind, AssertUnwindSafe};

use jni::objects::{
    JByteArray, JClass, JIntArray, JObject, JObjectArray, JString, JThrowable, JValue,
};
use jni::sys::{jint, jlong, jobjectArray, jstring};
use jni::JNIEnv;
use outpost_runtime::{Config, Error, ImageInput, PixelFormat, Prediction, RawImage};

use crate::boundary::{caught, null};
use crate::license::{activate_json, import_json, request_json, status_json};
use crate::predictor::{info_json, PREDICTORS};

/// A failure of the JNI calls themselves (a Java exception is then pending).
fn jni_error(e: jni::errors::Error) -> Error {
    Error::Internal(format!("JNI: {e}"))
}

/// Runs an entry point's body; on failure throws `OutpostException` and returns
/// `fallback` (which Java never sees, as the exception is pending).
fn run<'l, T>(
    env: &mut JNIEnv<'l>,
    fallback: T,
    body: impl FnOnce(&mut JNIEnv<'l>) -> Result<T, Error>,
) -> T {
    let error = match catch_unwind(AssertUnwindSafe(|| body(env))) {
        Ok(Ok(value)) => return value,
        Ok(Err(e)) => e,
        Err(panic) => caught(panic),
    };
    throw(env, &error);
    fallback
}

fn throw(env: &mut JNIEnv<'_>, error: &Error) {
    // A Java exception raised by a JNI call is already on its way.
    if env.exception_check().unwrap_or(true) {
        return;
    }
    let message = error.to_string();
    let exception = env.new_string(&message).and_then(|text| {
        env.new_object(
            "ai/outpost/OutpostException",
            "(ILjava/lang/String;)V",
            &[JValue::Int(error.code() as jint), JValue::Object(&text)],
        )
    });
    let thrown = match exception {
        Ok(e) => env.throw(JThrowable::from(e)),
        Err(_) => env.throw_new("java/lang/RuntimeException", message),
    };
    // Nothing more can be done if even that fails; the VM has its own error then.
    drop(thrown);
}

fn string(env: &mut JNIEnv<'_>, s: &JString<'_>, name: &str) -> Result<String, Error> {
    if s.is_null() {
        return Err(null(name));
    }
    Ok(env.get_string(s).map_err(jni_error)?.into())
}

fn optional_string(
    env: &mut JNIEnv<'_>,
    s: &JString<'_>,
    name: &str,
) -> Result<Option<String>, Error> {
    match s.is_null() {
        true => Ok(None),
        false => string(env, s, name).map(Some),
    }
}

/// A `Config` from the Java `Config`'s parallel key and value arrays.
fn config(
    env: &mut JNIEnv<'_>,
    keys: &JObjectArray<'_>,
    values: &JObjectArray<'_>,
) -> Result<Config, Error> {
    if keys.is_null() || values.is_null() {
        return Err(null("config keys or values"));
    }
    let n = env.get_array_length(keys).map_err(jni_error)?;
    if env.get_array_length(values).map_err(jni_error)? != n {
        return Err(Error::InvalidArgument(
            "config keys and values differ in length".into(),
        ));
    }
    let mut config = Config::default();
    for i in 0..n {
        let key = JString::from(env.get_object_array_element(keys, i).map_err(jni_error)?);
        let value = JString::from(env.get_object_array_element(values, i).map_err(jni_error)?);
        let key = string(env, &key, "config key")?;
        let value = optional_string(env, &value, "config value")?;
        config.set(&key, value.as_deref())?;
    }
    Ok(config)
}

/// `Object[] {Integer task, int[] indices, String[] labels, float[] values, String json}`
/// (values: one per class, five per box; json only for raw outputs).
fn results_to_java<'l>(
    env: &mut JNIEnv<'l>,
    prediction: &Prediction,
) -> Result<JObjectArray<'l>, Error> {
    let (task, indices, labels, values, json) = match prediction {
        Prediction::Classification(c) => (
            1,
            c.iter().map(|r| r.index as i32).collect::<Vec<_>>(),
            c.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
            c.iter().map(|r| r.confidence).collect::<Vec<_>>(),
            None,
        ),
        Prediction::Detection(d) => (
            2,
            d.iter().map(|r| r.index as i32).collect(),
            d.iter().map(|r| r.label.as_str()).collect(),
            d.iter()
                .flat_map(|r| [r.confidence, r.x1, r.y1, r.x2, r.y2])
                .collect(),
            None,
        ),
        Prediction::Raw(_) => (
            3,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Some(
                serde_json::to_string(prediction)
                    .map_err(|e| Error::Internal(format!("results to JSON: {e}")))?,
            ),
        ),
    };
    let len = |n: usize| i32::try_from(n).map_err(|_| Error::Internal("too many results".into()));
    let e = jni_error;
    let task = env
        .new_object("java/lang/Integer", "(I)V", &[JValue::Int(task)])
        .map_err(e)?;
    let index_array = env.new_int_array(len(indices.len())?).map_err(e)?;
    env.set_int_array_region(&index_array, 0, &indices)
        .map_err(e)?;
    let label_array = env
        .new_object_array(len(labels.len())?, "java/lang/String", JObject::null())
        .map_err(e)?;
    for (i, label) in labels.iter().enumerate() {
        let s = env.new_string(label).map_err(e)?;
        env.set_object_array_element(&label_array, i as i32, &s)
            .map_err(e)?;
        // Many boxes must not fill the VM's local reference table.
        env.delete_local_ref(s).map_err(e)?;
    }
    let value_array = env.new_float_array(len(values.len())?).map_err(e)?;
    env.set_float_array_region(&value_array, 0, &values)
        .map_err(e)?;
    let json = match json {
        Some(j) => JObject::from(env.new_string(j).map_err(e)?),
        None => JObject::null(),
    };
    let out = env
        .new_object_array(5, "java/lang/Object", JObject::null())
        .map_err(e)?;
    let parts: [&JObject<'_>; 5] = [&task, &index_array, &label_array, &value_array, &json];
    for (i, part) in parts.into_iter().enumerate() {
        env.set_object_array_element(&out, i as i32, part)
            .map_err(e)?;
    }
    Ok(out)
}

fn infer<'l>(
    env: &mut JNIEnv<'l>,
    predictor: jlong,
    input: ImageInput<'_>,
) -> Result<jobjectArray, Error> {
    let predictor = PREDICTORS.get(predictor as usize)?;
    let prediction = predictor.infer(input)?;
    Ok(results_to_java(env, &prediction)?.into_raw())
}

/// `Native.version()`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_version<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
) -> jstring {
    run(&mut env, std::ptr::null_mut(), |env| {
        Ok(env
            .new_string(env!("CARGO_PKG_VERSION"))
            .map_err(jni_error)?
            .into_raw())
    })
}

/// `Native.checkSetting(key, value)`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_checkSetting<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    key: JString<'l>,
    value: JString<'l>,
) {
    run(&mut env, (), |env| {
        let key = string(env, &key, "key")?;
        let value = optional_string(env, &value, "value")?;
        Config::default().set(&key, value.as_deref())
    })
}

/// `Native.open(packagePath, keys, values)`: a predictor handle.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_open<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    package_path: JString<'l>,
    keys: JObjectArray<'l>,
    values: JObjectArray<'l>,
) -> jlong {
    run(&mut env, 0, |env| {
        let path = string(env, &package_path, "packagePath")?;
        let config = config(env, &keys, &values)?;
        let predictor = outpost_runtime::Predictor::open(path, &config)?;
        Ok(PREDICTORS.insert(predictor) as jlong)
    })
}

/// `Native.inferImage(predictor, image)`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_inferImage<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    predictor: jlong,
    image: JByteArray<'l>,
) -> jobjectArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        if image.is_null() {
            return Err(null("image"));
        }
        let bytes = env.convert_byte_array(&image).map_err(jni_error)?;
        infer(env, predictor, ImageInput::Encoded(&bytes))
    })
}

/// `Native.inferArgb(predictor, pixels, width, height, stride)`: Android's
/// `ARGB_8888` ints (`0xAARRGGBB`), rows `stride` ints apart.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_inferArgb<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    predictor: jlong,
    pixels: JIntArray<'l>,
    width: jint,
    height: jint,
    stride: jint,
) -> jobjectArray {
    run(&mut env, std::ptr::null_mut(), |env| {
        if pixels.is_null() {
            return Err(null("pixels"));
        }
        let (Ok(width), Ok(height), Ok(stride)) = (
            u32::try_from(width),
            u32::try_from(height),
            usize::try_from(stride),
        ) else {
            return Err(Error::InvalidArgument(format!(
                "width {width}, height {height} and stride {stride} must not be negative"
            )));
        };
        let n = env.get_array_length(&pixels).map_err(jni_error)? as usize;
        let mut ints = vec![0i32; n];
        env.get_int_array_region(&pixels, 0, &mut ints)
            .map_err(jni_error)?;
        // 0xAARRGGBB as bytes B, G, R, A: the BGRA order. On little-endian CPUs
        // (every Android device) that is how the ints lie in memory: no second copy.
        let bytes: std::borrow::Cow<'_, [u8]> = if cfg!(target_endian = "little") {
            // SAFETY: the slice covers exactly the Vec's initialised i32s, viewed as
            // bytes (align 1, no padding), and lives no longer than `ints`.
            std::borrow::Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(ints.as_ptr().cast::<u8>(), ints.len() * 4)
            })
        } else {
            std::borrow::Cow::Owned(ints.iter().flat_map(|p| p.to_le_bytes()).collect())
        };
        let raw = RawImage {
            data: &bytes,
            width,
            height,
            stride: stride.saturating_mul(4),
            format: PixelFormat::Bgra8,
        };
        infer(env, predictor, ImageInput::Raw(raw))
    })
}

/// `Native.info(predictor)`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_info<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    predictor: jlong,
) -> jstring {
    run(&mut env, std::ptr::null_mut(), |env| {
        let p = PREDICTORS.get(predictor as usize)?;
        Ok(env.new_string(info_json(&p)).map_err(jni_error)?.into_raw())
    })
}

/// `Native.close(predictor)`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_close<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    predictor: jlong,
) {
    run(&mut env, (), |_| PREDICTORS.remove(predictor as usize))
}

/// The four licence calls: settings from Java, JSON back.
fn license_call<'l>(
    env: &mut JNIEnv<'l>,
    keys: &JObjectArray<'l>,
    values: &JObjectArray<'l>,
    call: impl FnOnce(&mut JNIEnv<'l>, &Config) -> Result<String, Error>,
) -> jstring {
    run(env, std::ptr::null_mut(), |env| {
        let config = config(env, keys, values)?;
        let json = call(env, &config)?;
        Ok(env.new_string(json).map_err(jni_error)?.into_raw())
    })
}

/// A licence call on one package: `Native.<name>(packagePath, keys, values)`.
macro_rules! package_license_call {
    ($(#[$doc:meta])* $name:ident => $op:path) => {
        $(#[$doc])*
        #[no_mangle]
        pub extern "system" fn $name<'l>(
            mut env: JNIEnv<'l>,
            _class: JClass<'l>,
            package_path: JString<'l>,
            keys: JObjectArray<'l>,
            values: JObjectArray<'l>,
        ) -> jstring {
            license_call(&mut env, &keys, &values, |env, config| {
                $op(&string(env, &package_path, "packagePath")?, config)
            })
        }
    };
}

package_license_call!(
    /// `Native.licenseActivate(packagePath, keys, values)`.
    Java_ai_outpost_Native_licenseActivate => activate_json
);
package_license_call!(
    /// `Native.licenseRequest(packagePath, keys, values)`.
    Java_ai_outpost_Native_licenseRequest => request_json
);

/// `Native.licenseImport(licensePath, packagePath, keys, values)`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_licenseImport<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    license_path: JString<'l>,
    package_path: JString<'l>,
    keys: JObjectArray<'l>,
    values: JObjectArray<'l>,
) -> jstring {
    license_call(&mut env, &keys, &values, |env, config| {
        let license = string(env, &license_path, "licensePath")?;
        let package = optional_string(env, &package_path, "packagePath")?;
        import_json(&license, package.as_deref(), config)
    })
}

/// `Native.licenseStatus(packagePath, keys, values)`.
#[no_mangle]
pub extern "system" fn Java_ai_outpost_Native_licenseStatus<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    package_path: JString<'l>,
    keys: JObjectArray<'l>,
    values: JObjectArray<'l>,
) -> jstring {
    license_call(&mut env, &keys, &values, |env, config| {
        let package = optional_string(env, &package_path, "packagePath")?;
        status_json(package.as_deref(), config)
    })
}
